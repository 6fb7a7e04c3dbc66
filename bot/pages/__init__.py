"""HTML pages for page owners and the operator: sign-in, profiles, (later) statistics.

Every page needs a signed-in user (else a redirect to /login); every POST needs the form's
CSRF token. Templates autoescape, so names and contact data never become markup.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, request, url_for

from bot.pages import session as auth
from bot.pages.format import duration, percent_of, thousands

bp = Blueprint("pages", __name__)
PUBLIC_ENDPOINTS = {"pages.login", "pages.facebook_callback", "pages.login_with_facebook"}


@bp.before_request
def require_sign_in_and_csrf():
    if request.method == "POST":
        auth.check_csrf()
    if request.endpoint not in PUBLIC_ENDPOINTS and auth.current_user() is None:
        return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
    return None


@bp.app_context_processor
def template_helpers():
    return {
        "csrf_token": auth.csrf_token,
        "current_user": auth.current_user(),
        "sandbox": current_app.config["SETTINGS"].sandbox,
    }


bp.add_app_template_filter(thousands, "thousands")
bp.add_app_template_filter(duration, "duration")
bp.add_app_template_filter(percent_of, "percent_of")


@bp.after_request
def protect(response):
    """No framing, no inline script, no sniffing: the pages show contact data."""
    login_origin = current_app.config["SETTINGS"].fb_login_url
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; "
        f"frame-ancestors 'none'; form-action 'self' {login_origin}",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


from bot.pages import consent, login, profiles, recovery, stats  # noqa: E402,F401  (routes register on bp)
