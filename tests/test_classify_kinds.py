"""The classifier on the kinds of columns real systems have: a bare primary key of a person record, vendor ids,
short and coded names, context from nesting and from the asset's name, the false positives of flags, lookup codes
and constants, values from many countries; and every word of its vocabularies reachable."""

from __future__ import annotations

import hashlib

import pytest

from ketch_spark.catalog import classify
from ketch_spark.catalog.classify import classify_column, classify_rows, name_tokens

_UUIDS = ["6D92078A-8246-4BA4-AE5B-76104861E7DC", "0F8FAD5B-D9CB-469F-A165-70867728950E",
          "7C9E6679-7425-40DE-944B-E07FC1F90AE7", "3F2504E0-4F89-11D3-9A0C-0305E82C3301"]
_NAMES = ["Nguyễn Thị Mai", "Oluwaseun Adeyemi", "Siobhán Ní Bhriain", "Zhang Wei", "José María Fernández",
          "Aarav Sharma", "Ólafur Sigurðsson", "Fatma Yılmaz"]
_EMAILS = ["mai.nguyen@example.com", "seun+news@example.org", "siobhan@mail.example.ie", "Zhang.Wei@Example.cn",
           "jm.fernandez@example.es", "aarav@example.in", "olafur@example.is", "fatma@example.com.tr"]


def _category(path: str, values: list, asset: str | None = None) -> str | None:
    return classify_column(path, values, asset_name=asset).category


@pytest.mark.parametrize(("path", "asset", "expected"), [
    ("id", "crm/contacts", "user_id"),
    ("Id", "salesforce/Lead", "user_id"),
    ("after.id", "cdc/shop.public.customers", "user_id"),
    ("before.id", "cdc/shop.public.customers", "user_id"),
    ("payload.after.id", "cdc/shop.public.subscribers", "user_id"),
    ("after.id", "cdc/shop.public.products", None),
    ("id", "shop/orders", None),
    ("id", "people", "user_id"),
    ("hs_object_id", "hubspot/contacts", "user_id"),
    ("properties.hs_object_id", "hubspot/contacts", "user_id"),
    ("traits.id", "segment/identifies", "user_id"),
    ("tags.id", "mailchimp/members", None),
    ("device.id", "events", "device_id"),
])
def test_a_bare_primary_key_takes_its_meaning_from_the_record(path, asset, expected):
    assert _category(path, ["10231", "10232", "10577", "11020", "11021"], asset) == expected


@pytest.mark.parametrize(("path", "values", "expected"), [
    ("anonymousId", [u.lower() for u in _UUIDS], "device_id"),
    ("user_pseudo_id", ["1197096541.1708281994", "2093485867.1708313990", "50311427.1708344049"], "device_id"),
    ("visitor_id", ["v-8f3a", "v-11c0", "v-9d2e"], "device_id"),
    ("idfv", _UUIDS, "device_id"),
    ("advertising_id", [u.lower() for u in _UUIDS], "device_id"),
    ("google_ad_id", [u.lower() for u in _UUIDS], "device_id"),
    ("gclid", ["EAIaIQobChMI8pL3", "Cj0KCQiA5rGuBhCn", "CjwKCAiAzc2tBhA6"], "device_id"),
    ("fbclid", ["IwAR2F4-dbP0l7Mn", "IwAR0Xl8aS1kq2Pz", "IwAR3hT_9s8Lm0Qa"], "device_id"),
    ("fbp", ["fb.1.1596403881668.1116446470", "fb.1.1596403881668.1116446471", "fb.2.1596403.11164"], "device_id"),
    ("domain_userid", ["c6ef3124-b53a-4b13", "a1b2c3d4-e5f6-4a7b", "0f8fad5b-d9cb-469f"], "device_id"),
    ("distinct_id", ["222078", "928735", "393257"], "user_id"),
    ("amplitude_id", [50837164, 50837165, 69281102], "user_id"),
    ("braze_id", ["65f1a2b3c4d5e6f7a8b9c0d1", "65f1a2b3c4d5e6f7a8b9c0d2", "65f1a2b3c4d5e6f7a8b9c0d3"], "user_id"),
    ("sub", ["google-oauth2|101763528849", "auth0|65f1a2b3c4d5", "samlp|acme|jane"], "user_id"),
    ("admin_graphql_api_id", ["gid://shopify/Customer/7034", "gid://shopify/Customer/7035",
                              "gid://shopify/Customer/7036"], "user_id"),
    ("external_id", ["crm-0042", "crm-0043", "crm-0077"], "user_id"),
])
def test_vendor_identifier_names_and_values(path, values, expected):
    assert _category(path, values) == expected


def test_short_and_coded_names():
    sha = [hashlib.sha256(e.lower().encode()).hexdigest() for e in _EMAILS]
    assert _category("user_data.em", sha, "ads/meta_capi/events") == "email_sha256"
    assert _category("merge_fields.FNAME", ["Mai", "Oluwaseun", "Siobhán", "Wei"]) == "person_name"
    assert _category("merge_fields.LNAME", ["Nguyễn", "Adeyemi", "Ní Bhriain", "Zhang"]) == "person_name"
    assert _category("merge_fields.BIRTHDAY", ["07/19", "12/03", "01/30", "11/11"]) == "date_of_birth"
    assert _category("after.birth_date", [3650, -2000, 7300, 12000]) == "date_of_birth"  # days since 1970


def test_an_md5_of_an_email_in_the_same_sample_is_an_email_hash():
    rows = [{"id": hashlib.md5(e.lower().encode()).hexdigest(), "email_address": e} for e in _EMAILS]
    found = {c.column: c for c in classify_rows(rows, asset_name="mailchimp/list_members")}
    assert found["id"].category == "email_md5" and "cross-column" in found["id"].method
    unrelated = [{"id": hashlib.md5(f"row-{i}".encode()).hexdigest(), "email_address": e}
                 for i, e in enumerate(_EMAILS)]
    found = {c.column: c for c in classify_rows(unrelated, asset_name="mailchimp/list_members")}
    assert found["id"].category == "user_id"  # a hex id of a member, not a hash of its email


@pytest.mark.parametrize(("path", "asset", "expected"), [
    ("traits.name", "segment/identifies", "person_name"),
    ("default_address.name", "shopify/customers", "person_name"),
    ("addresses.name", "shopify/customers", "person_name"),
    ("name", "stripe/customers", "person_name"),
    ("Name", "salesforce/Contact", "person_name"),
    ("$properties.$name", "mixpanel/people", "person_name"),
    ("traits.company.name", "segment/identifies", None),
    ("name", "shopify/products", None),
])
def test_a_bare_name_takes_its_meaning_from_the_struct_or_asset(path, asset, expected):
    assert _category(path, _NAMES, asset) == expected


def test_flags_codes_and_constants_are_not_identities():
    assert _category("phone_verified", [True, False, True, True, False]) is None
    assert _category("shared_phone_number", [True, False, False, True]) is None
    assert _category("email_verified", ["true", "false", "true"]) is None
    assert _category("mobile_id", [1, 2, 3, 2, 1, 4]) is None
    assert _category("user_id", ["u-1"] * 8) is None  # one value over the sample: a default, nobody's id
    assert _category("target:port", ["10.0.1.17:8080", "10.0.2.9:8080", "10.0.1.17:8080"]) is None  # a server
    assert _category("last_login", ["2024-03-01T08:45:39Z", "2024-02-11T10:01:02Z", "2024-01-30T22:13:00Z"]) is None
    assert _category("hashed_street_address", [hashlib.sha256(b"x").hexdigest()] * 2 + ["ab" * 32]) is None
    assert _category("user_properties.key", ["plan", "signup_method", "plan", "plan", "country"]) is None


def test_values_from_many_countries():
    assert _category("customer.name", _NAMES) == "person_name"
    lines = ["Flat 2, 14 Baker Street", "12 rue de la Paix", "Hauptstraße 5", "Calle Mayor 12", "221B Baker St",
             "Apt 4B"]
    assert _category("billing_details.address.line1", lines) == "postal_address"
    assert _category("shipping_address.address2", ["Apt 4B", "Suite 200", "Flat 2", "Bâtiment C"]) == "postal_address"
    assert _category("postcode", ["SW1A 1AA", "EC1A 1BB", "M1 1AE", "75002", "10115"]) == "postal_address"
    assert _category("gender", ["O", "U", "N", "F", "M", "P"]) == "gender"
    assert _category("x-forwarded-for", ["203.0.113.9, 10.0.0.1", "-", "198.51.100.7", "-"]) == "ip_address"
    assert _category("client:port", ["203.0.113.9:51234", "[2001:db8::7]:443", "198.51.100.7:3321"]) == "ip_address"


def test_an_email_under_an_id_name_is_an_email():
    assert _category("profile.login", _EMAILS) == "email"
    assert _category("federatedIdentities.userName", _EMAILS) == "email"


# every word of the vocabularies reaches its category (a compound split must not break it)
_VALUES = {
    "email": _EMAILS,
    "phone": ["+14155550123", "+4915112345678", "+33612345678", "+442071234567"],
    "ip_address": ["203.0.113.9", "2001:db8::7", "198.51.100.7"],
    "postal_address": ["12 Main Street", "Hauptstraße 5", "12 rue de la Paix", "Flat 2, 14 Baker Street"],
    "date_of_birth": ["1980-01-02", "1975-12-31", "1999-12-31"],
    "credit_card": ["4111111111111111", "5500000000000004", "340000000000009"],
    "gender": ["F", "M", "O", "female"],
    "age_range": ["18-24", "25-34", "65+"],
    "income_band": ["50k-75k", "<25k", "150k+"],
    "person_name": _NAMES,
    "device_id": ["fb.1.1596403881668.1116446470", "Cj0KCQiA5rGuBhCn_2", "6d92078a-8246-4ba4-ae5b-76104861e7dc"],
}
_VOCABULARIES = {
    "email": classify._EMAIL_WORDS,
    "phone": classify._PHONE_WORDS,
    "ip_address": classify._IP_WORDS - {"forwarded"},  # "forwarded" alone is not enough; x-forwarded-for is
    "postal_address": classify._POSTCODE_WORDS | classify._ADDRESS_STRONG,
    "date_of_birth": classify._DOB_WORDS,
    "credit_card": classify._CARD_WORDS,
    "gender": classify._GENDER_WORDS,
    "age_range": classify._AGE_WORDS,
    "income_band": classify._INCOME_WORDS,
    "person_name": classify._NAME_WORDS,
    "device_id": classify._DEVICE_STRONG,
}
_POSTCODES = ["SW1A 1AA", "75002", "10115", "94105-1804"]


@pytest.mark.parametrize(("category", "word"), sorted((c, w) for c, words in _VOCABULARIES.items() for w in words))
def test_every_vocabulary_word_is_reachable(category, word):
    values = _POSTCODES if word in classify._POSTCODE_WORDS else _UUIDS if word in classify._AD_IDS \
        else _VALUES[category]
    if word in ("sha", "sha256", "hash", "hashed", "md5", "digest", "hem"):
        pytest.skip("hash words qualify an email name")
    assert _category(word, values) == category, name_tokens(word)


def test_advertising_ids_must_be_uuids():
    assert _category("idfa", ["abc", "def1", "ghi2"]) is None
    assert _category("idfa", _UUIDS) == "device_id"


def test_ip_address_by_the_forwarded_header_name():
    assert _category("x-forwarded-for", ["203.0.113.9", "198.51.100.7", "192.0.2.44"]) == "ip_address"


@pytest.mark.parametrize(("path", "asset", "expected"), [
    ("customer_aliases.alias", "crm/accounts", "user_id"),
    ("aliases.alias_name", "loyalty/members", "user_id"),
    ("member.alias_id", "events", "user_id"),
    ("aliases.alias_label", "loyalty/members", None),  # the kind of alias, not an alias
    ("product_aliases.alias", "shop/catalog", None),
])
def test_an_alias_of_a_person_is_another_id_of_that_person(path, asset, expected):
    values = ["40151530399", "41371195703", "10809064921", "17096088523", "34335489221"]
    assert _category(path, values if expected else ["amplitude_id"] * 2 + ["mparticle_id"] * 3, asset) == expected


@pytest.mark.parametrize(("path", "values"), [
    ("cookie", ["sid=8f3a91c2; _ga=GA1.2.1197.1708", "sid=11c0a4d7; _ga=GA1.2.2093.1708", "sid=9d2e77b0", "-"]),
    ("cs(Cookie)", ["session-id=262-2291; ubid-main=133-59", "session-id=118-0451;ubid-main=130-77;", "-", "-"]),
    ("request.cookie_id", ["8f3a91c2d7", "11c0a4d7e1", "9d2e77b0aa", "-"]),
])
def test_a_field_the_log_left_out_is_not_classified_by_its_name(path, values):
    assert _category(path, ["-"] * 8, "logs/edge") is None  # every row "-": cookie logging is off
    assert _category(path, values, "logs/edge") == "device_id"  # on: the browser's ids


@pytest.mark.parametrize(("path", "asset", "expected"), [
    ("unique_email_id", "newsletter/subscribers", "user_id"),
    ("email_id", "crm/contacts", "user_id"),
    ("email_id", "campaigns/sends", None),      # a message's id
    ("unique_email_id", "campaigns/opens", None),
])
def test_the_id_of_a_subscribers_address_is_the_subscribers_id(path, asset, expected):
    assert _category(path, ["a3f09c21d7", "b81e4402fa", "c0d9e6513b", "d47a2b88e0", "e5c1f0937d"], asset) == expected


@pytest.mark.parametrize(("path", "asset", "expected"), [
    ("AccountId", "crm/Contact", None),          # a CRM contact's account is the company they work for
    ("account_id", "sales/leads", None),
    ("account_id", "app/users", "user_id"),      # a user's own account
    ("account_id", "billing/customers", "user_id"),
    ("contact.account_id", "events", None),
])
def test_the_account_of_a_crm_contact_is_a_company(path, asset, expected):
    assert _category(path, ["0015e00000A1", "0015e00000B2", "0015e00000C3", "0015e00000D4", "0015e00000E5"],
                     asset) == expected
