"""Contact data with markup, quotes, @ markers and formula prefixes is shown as itself
everywhere: in messages, pages, CSV and JSON."""

from __future__ import annotations

import csv
import io
import time

from bot import personalize
from storage.stats import day_of
from tests.test_pages import sign_in_operator
from tests.test_stats import Seeder

NASTY = {
    "FIRSTNAME": '<script>alert("x")</script>',
    "LASTNAME": 'O\'Brien "Bob" & <b>co</b>',
    "EMAIL": '=HYPERLINK("http://evil")',
    "PHONE": "+1-555 @FIRSTNAME@",
    "CITY": "@FIRSTNAME|x@",
}


def test_personalisation_inserts_values_verbatim_and_never_reads_them_again():
    text = personalize.render("Hi @FIRSTNAME@ from @CITY@ (@PHONE@)", NASTY)
    assert text == 'Hi <script>alert("x")</script> from @FIRSTNAME|x@ (+1-555 @FIRSTNAME@)'


def test_pages_csv_and_json_show_contact_data_as_text(client, api, store, fb):
    page = fb.create_page(name="P")
    profile = store.profiles.create(
        name="P", page_id=page["id"], page_name="P", page_token=page["token"]
    )
    store.contacts.merge_many({"nasty": NASTY})
    seed = Seeder(store, page["id"], profile.id)
    now = int(time.time() * 1000)
    seed.not_sent("nasty", "warning", "no_optin", now)
    day = day_of(now, store.tz)
    sign_in_operator(client)
    html = client.get(f"/profiles/{profile.id}/stats/{day}/warning").get_data(as_text=True)
    assert "<script>alert" not in html and "<b>co</b>" not in html
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        and "O&#39;Brien &#34;Bob&#34; &amp; &lt;b&gt;co&lt;/b&gt;" in html
    )
    rows = list(
        csv.reader(
            io.StringIO(
                client.get(f"/profiles/{profile.id}/stats/{day}/warning.csv").get_data(as_text=True)
            )
        )
    )
    header, row = rows[0], rows[1]
    cells = dict(zip(header, row, strict=True))
    assert cells["firstname"] == NASTY["FIRSTNAME"] and cells["lastname"] == NASTY["LASTNAME"]
    assert (
        cells["email"] == "'" + NASTY["EMAIL"] and cells["phone"] == "'" + NASTY["PHONE"]
    )  # no formulas
    listed = api("get", f"/profiles/{profile.id}/stats/{day}/contacts?kind=warning").get_json()
    assert listed["contacts"][0]["fields"] == NASTY
    assert api("get", "/contacts/nasty").get_json()["fields"] == NASTY
