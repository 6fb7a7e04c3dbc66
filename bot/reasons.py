"""Why a contact was not sent, or why Facebook refused: one list for stats, API, CSV and runs.

Each reason: the outcome it belongs to, a plain-language text, and what the page owner can do.
"""

from __future__ import annotations

from typing import NamedTuple


class Reason(NamedTuple):
    outcome: str  # "warning" (not sent, by rule) or "failed" (Facebook refused or never answered)
    text: str
    advice: str


REASONS: dict[str, Reason] = {
    # Not sent by rule: the contact moves on through the program.
    "no_optin": Reason(
        "warning",
        "The contact has not opted in to this profile (no value in its FBOPTIN field).",
        "Show the profile's opt-in button on your landing page or website.",
    ),
    "contact_unknown": Reason(
        "warning", "The contact does not exist here.", "Check the program's contact source."
    ),
    "profile_disabled": Reason(
        "warning", "The Messenger profile is disabled.", "Enable the profile to send again."
    ),
    "profile_unavailable": Reason(
        "warning",
        "The profile cannot send: its Page is blocked or its token needs reauthorisation.",
        "Open the profile page and follow its instructions.",
    ),
    "outside_window_no_template": Reason(
        "warning",
        "Outside the 24-hour window and no utility template.",
        "Add an approved utility template to the node, "
        "or message contacts soon after they write to your Page.",
    ),
    "template_field_missing": Reason(
        "warning",
        "The contact has no value for a data field the utility template needs.",
        "Fill the data fields the template's parameters use.",
    ),
    "empty_message": Reason(
        "warning",
        "The personalised message is empty.",
        "Give the node's placeholders fallbacks, like @FIRSTNAME|there@.",
    ),
    "recipient_unreachable": Reason(
        "warning",
        "Facebook recently said this person cannot be reached; they are left alone for a while.",
        "Nothing to do: a message, postback or opt-in from them lifts it at once.",
    ),
    "opted_out": Reason(
        "warning",
        "The contact withdrew consent to messages from this profile.",
        "Nothing to do: they are sent again once they opt in through your button or link.",
    ),
    # Facebook refused, or could not be reached.
    "token_invalid": Reason(
        "failed",
        "Facebook no longer accepts the Page's access token.",
        "Reauthorise the profile (log in to Facebook again).",
    ),
    "page_blocked": Reason(
        "failed",
        "Facebook restricted the Page from sending messages.",
        "Check the Page's policy status in Facebook's Business Suite.",
    ),
    "sending_paused": Reason(
        "failed",
        "Not sent: the profile's sending is paused to protect the Page.",
        "See why on the profile's page; once it is resolved, resume and recover these sends.",
    ),
    "policy_warning": Reason(
        "failed",
        "Facebook warned that this Page sends this person too many tagged messages.",
        "Send this person fewer messages.",
    ),
    "messages_disabled": Reason(
        "failed", "The Page has messaging turned off.", "Turn on messaging in the Page's settings."
    ),
    "recipient_unavailable": Reason(
        "failed",
        "The person can't receive messages from this Page right now "
        "(blocked it or left Messenger).",
        "Nothing to do; do not retry soon.",
    ),
    "person_stopped": Reason(
        "failed",
        "The person stopped messages from this Page in Messenger; their consent is withdrawn.",
        "Nothing to do: they are sent again once they opt in again.",
    ),
    "invalid_recipient": Reason(
        "failed",
        "Facebook does not know this person for this Page; their opt-in is withdrawn.",
        "The contact's opt-in belongs to another Page or is stale; ask them to opt in again.",
    ),
    "outside_window": Reason(
        "failed",
        "Facebook refused: outside the 24-hour messaging window.",
        "Add an approved utility template to the node.",
    ),
    "template_rejected": Reason(
        "failed",
        "Facebook refused the utility template.",
        "Check that the template is approved for this Page and its parameters match.",
    ),
    "invalid_request": Reason(
        "failed",
        "Facebook refused the message as invalid.",
        "Check the node's message; the error details name the problem.",
    ),
    "permission_missing": Reason(
        "failed",
        "The app lacks a permission on this Page.",
        "Reauthorise the profile and grant every requested permission.",
    ),
    "app_not_reviewed": Reason(
        "failed",
        "The app may only message people with a role on it until Meta's App Review is passed.",
        "Complete App Review for pages_messaging.",
    ),
    "rate_limited": Reason(
        "failed",
        "Facebook kept refusing because of its rate limits.",
        "Send to fewer contacts at once; the messages were not sent.",
    ),
    "facebook_unavailable": Reason(
        "failed", "Facebook did not answer after several attempts.", "Run the contacts again later."
    ),
    "message_too_long": Reason(
        "failed",
        "The personalised message is longer than 2000 characters.",
        "Shorten the message or the data fields it uses.",
    ),
    "interrupted": Reason(
        "failed",
        "The send was interrupted and could not be confirmed; "
        "it was not repeated, so no one got it twice.",
        "Check the contact's conversation on Facebook before sending again.",
    ),
    "internal_error": Reason(
        "failed",
        "An internal error stopped the send; it has been logged and was not retried further.",
        "Run the contacts again; tell the operator if it repeats.",
    ),
    "unknown_error": Reason(
        "failed",
        "Facebook refused with an error we do not recognise.",
        "See the error code and message in the contact's details.",
    ),
}


class Pause(NamedTuple):
    text: str  # why the profile's sending is paused
    advice: str  # what the page owner can do


# What paused a profile's sending (storage/sending.py), as the API and the profile page say it.
PAUSES: dict[str, Pause] = {
    "error_rate": Pause(
        "Too many recent sends were refused because the people could not be reached or "
        "Facebook's policies forbade them; sending more would risk the Page.",
        "Check the lists that feed this profile's programs (old or bought contacts?). Sending "
        "tries again by itself after the pause; resume now only once the cause is fixed.",
    ),
    "page_blocked": Pause(
        "Facebook restricted the Page from sending messages.",
        "Check the Page's status in Meta Business Suite. Sending tries again by itself after "
        "the pause; resume now once Facebook has lifted the restriction.",
    ),
    "messages_disabled": Pause(
        "The Page has messaging turned off.",
        "Turn messaging on in the Page's settings, then resume.",
    ),
    "policy_block": Pause(
        "Facebook blocked the Page from messaging for its Platform Policies.",
        "Check the Page's status in Meta Business Suite. Sending resumes when Facebook lifts "
        "the block; resume now only if it has.",
    ),
}


def reason_text(code: str) -> str:
    return REASONS[code].text if code in REASONS else code
