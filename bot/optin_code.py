"""The opt-in code a business pastes on a landing page or website (DESIGN.md §5).

A Send to Messenger button (Facebook's JS SDK; the site's domain must be whitelisted on the
Page) and an m.me link beside it, which works everywhere. Both carry a signed ref naming the
contact (bot/refs.py), so nobody can attach their Messenger account to someone else.

The *generic* code is for landing pages the platform renders per contact: its ref is the merge
field `@FBOPTINREF_XXX@`, whose value for a contact is that contact's signed ref, listed by
`GET /api/v1/contacts/<id>` under `optin_refs` (computed on the fly, never stored).
"""

from __future__ import annotations

from markupsafe import escape

from storage.keys import OPTIN_FIELD_PREFIX

# One line of JavaScript is split in two pieces here only to keep the source within 100 columns.
_TEMPLATE = (
    """<!-- Messenger opt-in: {profile} ({page}) -->
<div class="fb-send-to-messenger" messenger_app_id="{app_id}" page_id="{page_id}"
     data-ref="{ref}" color="blue" size="large"></div>
<p><a href="https://m.me/{page_id}?ref={ref}">Get updates on Messenger</a></p>
<script>
  window.fbAsyncInit = function () {{ FB.init({{ appId: "{app_id}", xfbml: true, """
    """version: "{version}" }}); }};
</script>
<script async defer crossorigin="anonymous" src="https://connect.facebook.net/en_US/sdk.js"></script>
"""
)


def ref_field(profile_id: str) -> str:
    """The merge field a landing page uses for a contact's signed ref, e.g. FBOPTINREF_007."""
    return f"{OPTIN_FIELD_PREFIX.rstrip('_')}REF_{int(profile_id):03d}"


def optin_html(
    *, profile_name: str, page_name: str, page_id: str, app_id: str, version: str, ref: str
) -> str:
    """The snippet; every value is HTML-escaped (names come from users and Facebook)."""
    return _TEMPLATE.format(
        profile=escape(profile_name),
        page=escape(page_name),
        app_id=escape(app_id),
        page_id=escape(page_id),
        version=escape(version),
        ref=escape(ref),
    )


def generic_ref(profile_id: str) -> str:
    return f"@{ref_field(profile_id)}@"
