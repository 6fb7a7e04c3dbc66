"""The Messenger channel: the domain (settings, the delivery policy, reasons, personalisation,
opt-in refs, the Graph client, webhook parsing, profile lifecycle, run requests) in this
package's modules; the web app in `bot.app` (factory), `bot.api`, `bot.pages` and the webhook.
Which module may import which: tests/test_layers.py."""
