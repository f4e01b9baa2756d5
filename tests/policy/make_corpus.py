# ruff: noqa: E501, RUF001 - data lines; the fullwidth letters are the point of that sample
"""Writes corpus.jsonl: the labelled detector corpus (run once; the output is committed).

Positives are built valid by construction (Luhn, mod-97, SSA and HMRC rules, libphonenumber
example numbers) and set in varied sentences; hard negatives are the near misses that fool a
loose regex. `python tests/policy/make_corpus.py` rewrites the file deterministically.
"""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import phonenumbers

rng = random.Random(20240601)
OUT = Path(__file__).with_name("corpus.jsonl")
rows: list[dict[str, object]] = []

SENTENCES = [
    "Please contact {} about the invoice.",
    "My details: {}",
    "{} is the one to use.",
    "You can reach it at {}, thanks!",
    "Recorded value ({}) in the form.",
    "- item: {}\n- status: pending",
    "He wrote \"{}\" on the back of the envelope.",
    "Use {}; the old one is gone.",
]


def pos(detector: str, value: str, template: str | None = None) -> None:
    template = template or rng.choice(SENTENCES)
    rows.append({"text": template.format(value), "spans": [{"detector": detector, "value": value}]})


def neg(text: str, note: str) -> None:
    rows.append({"text": text, "spans": [], "note": note})


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        cand = body + d
        total = 0
        for i, c in enumerate(reversed(cand)):
            v = int(c)
            if i % 2:
                v = v * 2 - 9 if v > 4 else v * 2
            total += v
        if total % 10 == 0:
            return cand
    raise AssertionError


def group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for s in sizes:
        out.append(digits[i:i + s])
        i += s
    if i < len(digits):
        out.append(digits[i:])
    return sep.join(out)


def iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    num = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{country}{98 - num % 97:02d}{bban}"


def rand(chars: str, n: int) -> str:
    while True:
        s = "".join(rng.choice(chars) for _ in range(n))
        if any(c.isdigit() for c in s) and any(c.isupper() for c in s) and any(
                c.islower() for c in s) and sum(c.isdigit() for c in s) >= 2:
            return s


B62 = string.ascii_letters + string.digits

# --- email -------------------------------------------------------------------------------------
for v in ["jane.doe@example.com", "J.Smith+invoices@mail.example.co.uk", "a@b.io",
          "first_last@sub.domain.example.org", "x-ray.42@hospital-north.nhs.uk",
          "CAPS@EXAMPLE.COM", "o'brien@example.ie".replace("'", ""), "user%tag@example.net",
          "support@clinic.example", "12345@numbers.example.com", "m.müller@example.de".replace("ü", "u"),
          "dev.team@example.dev", "hello@xn--bcher-kva.example", "a.b.c.d@e.f.gh",
          "noreply@notifications.example.travel", "li.wei@example.cn", "sam@example.com",
          "info@law-office.example.com", "ana_maria@example.pt", "k9@dogs.example.org"]:
    pos("email", v)
pos("email", "jane@example.com", "<{}>")
pos("email", "bob@example.org", "Email:{}.")

# --- phone -------------------------------------------------------------------------------------
for region, fmt in [("US", phonenumbers.PhoneNumberFormat.NATIONAL),
                    ("US", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("GB", phonenumbers.PhoneNumberFormat.NATIONAL),
                    ("GB", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("DE", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("FR", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("ES", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("IN", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("AU", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("JP", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("BR", phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                    ("CA", phonenumbers.PhoneNumberFormat.E164)]:
    for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
        ex = phonenumbers.example_number_for_type(region, kind)
        if ex is not None:
            pos("phone", phonenumbers.format_number(ex, fmt), "Call {} after nine.")
for v in ["(415) 555-2671", "415.555.2671", "415-555-2671", "+1 (212) 555-0100",
          "020 7946 0958", "+44 161 496 0000"]:
    pos("phone", v, "Phone: {}")

# --- payment cards -----------------------------------------------------------------------------
for prefix, length, sizes in [("4", 16, [4, 4, 4, 4]), ("51", 16, [4, 4, 4, 4]),
                              ("2221", 16, [4, 4, 4, 4]), ("34", 15, [4, 6, 5]),
                              ("37", 15, [4, 6, 5]), ("6011", 16, [4, 4, 4, 4]),
                              ("65", 16, [4, 4, 4, 4]), ("3528", 16, [4, 4, 4, 4]),
                              ("36", 14, [4, 6, 4]), ("4", 19, [4, 4, 4, 4, 3]),
                              ("55", 16, [4, 4, 4, 4]), ("62", 16, [4, 4, 4, 4])]:
    for sep in (" ", "-", ""):
        if sep == "-" and prefix in ("65", "3528", "62", "36"):
            continue
        digits = luhn_complete(prefix, length)
        pos("payment_card", group(digits, sizes, sep) if sep else digits,
            rng.choice(["Card number {} exp 04/27", "Charge it to {} please.", "{}"]))

# --- IBAN --------------------------------------------------------------------------------------
for v in ["GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000",
          "DE89 3704 0044 0532 0130 00", "FR1420041010050500013M02606", "ES9121000418450200051332",
          "NL91ABNA0417164300", "BE68539007547034", "IT60X0542811101000000123456",
          "CH9300762011623852957", "AT611904300234573201", "PL61109010140000071219812874",
          iban("NO", "86011117947"), iban("DK", "00400440116243"), iban("IE", "AIBK93115212345678"),
          iban("PT", "000201231234567890154")]:
    pos("iban", v, rng.choice(["Transfer to IBAN {} today.", "IBAN: {}", "{} (savings)"]))

# --- IP addresses ------------------------------------------------------------------------------
for v in ["192.168.1.20", "10.0.0.1", "172.16.254.3", "8.8.8.8", "203.0.113.45", "100.64.12.9",
          "81.2.69.160", "198.51.100.7", "1.1.1.1", "255.255.255.0", "62.30.112.9",
          "185.199.108.153", "31.13.72.36", "45.33.32.156", "127.0.0.1"]:
    pos("ipv4", v, rng.choice(["Server at {} is down.", "ssh admin@{}".replace("admin@", "admin at "),
                               "Client IP {}, port 443", "IP: {}."]))
for v in ["2001:db8::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "fe80::1ff:fe23:4567:890a",
          "2606:4700:4700::1111", "::ffff:192.0.2.128", "2a00:1450:4009:81f::200e",
          "fd12:3456:789a:1::1", "2001:db8:0:0:1:0:0:1", "2001:db8::8a2e:370:7334",
          "2620:fe::fe", "2001:4860:4860::8888", "fe80::a:b:c:d"]:
    pos("ipv6", v, rng.choice(["Address {} answered.", "IPv6: {}", "route via {} now"]))

# --- national identifiers ----------------------------------------------------------------------
for v in ["536-22-1234", "123-45-6789", "212 67 4401", "401-33-9876", "665-12-3456",
          "001-01-0001", "772-10-4455", "899-99-9999", "318-64-2207", "547 28 1093",
          "234-56-7890", "610-42-8815"]:
    pos("us_ssn", v, rng.choice(["SSN {} on file", "Social security: {}", "{} (SSN)"]))
for v in ["536221234", "401339876", "318642207"]:
    pos("us_ssn", v, "SSN: {}")
for v in ["AB 12 34 56 C", "AB123456C", "JG 10 37 42 A", "PE 89 43 21 B", "NZ 01 23 45 D",
          "CE123456A", "WL 45 67 89 C", "HK 11 22 33 D", "TR 55 66 77 A", "MA 98 76 54 B",
          "SN 12 00 43 C", "YH 23 45 61 A"]:
    pos("uk_nino", v, rng.choice(["NI number {}", "National Insurance: {}.", "{} is my NINO"]))

# --- secrets -----------------------------------------------------------------------------------
for _ in range(10):
    pos("aws_access_key", "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567")
                                           for _ in range(16)),
        rng.choice(["aws_access_key_id = {}", "export AWS_ACCESS_KEY_ID={}", "key: {}"]))
for prefix in ["ghp_", "gho_", "ghs_", "ghu_", "ghr_", "ghp_", "ghp_", "gho_"]:
    pos("github_token", prefix + rand(B62, 36), "GITHUB_TOKEN={}")
pos("github_token", "github_pat_" + rand(B62 + "_", 82), "token: {}")
pos("github_token", "github_pat_" + rand(B62, 22) + "_" + rand(B62, 59), "{}")
for kind in "bpaoer" + "bp":
    pos("slack_token", f"xox{kind}-{rng.randint(10**9, 10**12)}-{rng.randint(10**9, 10**12)}-"
        + rand(B62, 24), "SLACK_TOKEN={}")
for pre in ["sk_live_", "sk_test_", "rk_live_", "sk_live_", "rk_test_", "sk_live_", "sk_test_",
            "sk_live_"]:
    pos("stripe_key", pre + rand(B62, rng.choice([24, 32, 99])), "stripe.api_key = \"{}\"")
for _ in range(8):
    pos("google_api_key", "AIza" + rand(B62 + "_-", 35), "?key={}&q=1".replace("?", "url?"))
for pre in ["sk-", "sk-proj-", "sk-", "sk-svcacct-", "sk-ant-", "sk-", "sk-proj-", "sk-admin-"]:
    pos("openai_key", pre + rand(B62 + "_-", rng.choice([32, 48, 64])), "OPENAI_API_KEY={}")


def b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


for alg in ["HS256", "RS256", "ES256", "HS512", "RS384", "PS256", "EdDSA", "HS256"]:
    header = b64url({"alg": alg, "typ": "JWT"})
    payload = b64url({"sub": str(rng.randint(1, 10**6)), "name": "Jane", "iat": 1516239022})
    sig = base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
    pos("jwt", f"{header}.{payload}.{sig}", "Authorization: Bearer {}")
for kind in ["RSA ", "EC ", "", "OPENSSH ", "DSA ", "ENCRYPTED "]:
    lines = "\n".join(base64.b64encode(rng.randbytes(48)).decode() for _ in range(6))
    pos("private_key", f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----",
        "Here is the key:\n{}\nkeep it safe")
pos("high_entropy", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = {}")
for n in [20, 24, 28, 32, 32, 40, 40, 44, 48, 64, 24, 36, 20, 22, 26, 30, 34, 40, 50, 60]:
    pos("high_entropy", rand(B62 + "+/", n), rng.choice(["password = {}", "secret: {}", "token {} "]))
for v in ["bob:s3cret", "admin:hunter2", "svc_user:P%40ssw0rd", "root:toor", "u:p",
          "deploy:gh-7f3a", "alice:correct-horse", "db:db", "me:my$pass", "api:k3y!",
          "postgres:postgres", "x:y"]:
    scheme = rng.choice(["https", "postgres", "mysql", "redis", "ftp", "amqp"])
    pos("url_credentials", v, f"{scheme}://{{}}@db.internal.example:5432/app")

# --- custom: word list and pattern -------------------------------------------------------------
for text, value in [("Diagnosed with cancer last May.", "cancer"), ("HIV test negative.", "HIV"),
                    ("History of Hepatitis C.", "Hepatitis C"), ("hepatitis   c, treated", "hepatitis   c"),
                    ("CANCER screening", "CANCER"), ("Family history: schizophrenia.", "schizophrenia"),
                    ("ｃａｎｃｅｒ (fullwidth)", "ｃａｎｃｅｒ"), ("Lives on Hauptstraße 5", "Hauptstraße"),
                    ("Lives on HAUPTSTRASSE 5", "HAUPTSTRASSE"), ("(hiv) status", "hiv"),
                    ("Schizophrenia, paranoid type", "Schizophrenia")]:
    rows.append({"text": text, "spans": [{"detector": "diagnosis", "value": value}]})
for v in ["MRN-123456", "MRN-000042", "MRN-998877", "MRN-424242", "MRN-100001", "MRN-654321"]:
    pos("patient_id", v, rng.choice(["Patient {} admitted", "record {}", "{}: follow-up"]))

# --- a few mixed samples (two findings) --------------------------------------------------------
rows.append({"text": "Mail jane@example.com or call +44 20 7946 0958 today.",
             "spans": [{"detector": "email", "value": "jane@example.com"},
                       {"detector": "phone", "value": "+44 20 7946 0958"}]})
rows.append({"text": "IP 10.1.2.3 logged in as carl@example.org",
             "spans": [{"detector": "ipv4", "value": "10.1.2.3"},
                       {"detector": "email", "value": "carl@example.org"}]})

# --- hard negatives ----------------------------------------------------------------------------
for prefix, length in [("4", 16), ("51", 16), ("37", 15), ("6011", 16), ("4", 16), ("55", 16),
                       ("2221", 16), ("34", 15), ("4", 13), ("65", 16)]:
    d = luhn_complete(prefix, length)
    bad = d[:-1] + str((int(d[-1]) + rng.randint(1, 9)) % 10)
    neg(f"Card {group(bad, [4, 4, 4, 4], ' ')} was declined", "fails Luhn")
    neg(f"Reference {bad}", "fails Luhn, contiguous")
for prefix in ["1", "7", "8", "9", "00"]:
    neg(f"Tracking number {luhn_complete(prefix, 16)}", "Luhn-valid but no card issuer")
neg("Numbers 1 2 3 4 5 6 7 8 9 1 2 3 4 5 6", "single digits in a list")
neg("GB82WEST12345698765431", "IBAN with a bad checksum")
neg("GB82 WEST 1234 5698 7654 33", "IBAN with a bad checksum, grouped")
neg("DE89370400440532013001", "IBAN with a bad checksum")
neg("NL91ABNA041716430", "IBAN one character short")
neg("FR1420041010050500013M0260", "IBAN one character short")
neg("XX82WEST12345698765432", "unknown country")
neg("Product code AB12CDEF34567890", "two letters two digits, not an IBAN")
neg("Model GB90 rev 1234 ships in May", "country-looking prefix")
neg("Reference ES12 3456", "too short for an IBAN")
neg("Order DE12345678 confirmed", "letters and digits, not an IBAN")
for text in ["The meeting is on 2024-03-15 at 10:30.", "Due 03/15/2024 10:30 AM", "Born 15.03.1984",
             "Timestamp 20240315103000", "Logged at 2023-10-12 14:22:11", "Invoice dated 12/10/2023",
             "The build of 2024-01-02T03:04:05Z failed", "Week 2024-W11 report",
             "Q3 2024-2025 forecast", "From 1999 to 2024", "It costs $1,234,567.89",
             "Population 7,900,000,000", "Zip 90210-1234", "Coordinates 37.7749, -122.4194",
             "ISBN 978-3-16-148410-0", "Order number 1234567890", "Room 101, floor 3",
             "Flight BA 2490 departs 10:45", "Scores were 12-15-18 and 22", "Call me at noon",
             "1-2-3-4-5 go", "Pi is 3.14159265358979", "Times: 10:30:45 and 11:15:00",
             "Serial 0000000000", "Range 100-200-300-400"]:
    neg(text, "dates, times and numbers that look like phone numbers")
for text in ["version 1.2.3.4", "Version 10.0.0.1 is out", "v1.2.3.4", "release 2.4.10.1",
             "upgraded from ver. 4.1.2.7", "OID 1.3.6.1.4.1.343", "1.2.3.4.5", "256.1.2.3",
             "10.0.0", "Section 3.1.2.4 applies", "see chapter 10.2.1.3", "build 5.0.2195.6717",
             "1.2.3.400 is not valid", "rev 7.7.7.7", "§ 12.3.4.5", "999.999.999.999",
             "Article 1.2.3.4 of the contract", "step 2.1.1.3", "a.b.c.d", "3.14.15.92.65"]:
    neg(text, "version and section numbers that look like IPv4")
for text in ["MAC 00:1A:2B:3C:4D:5E", "Time 12:30:45", "std::vector<int>", "use :: as separator",
             "ratio 1:2:3", "a:b:c", "1:2:3:4:5:6:7:8:9", "2001:db8:::1", "localhost ::1",
             "Foo::Bar::baz()", "emoji :smile: :wave:", "dead:beef"]:
    neg(text, "colons that are not IPv6")
for text in ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000",
             "Order 536221234 shipped", "536-22-12345", "078-05-1120", "219-09-9999",
             "Part 123-456-7890", "Temperature 536.22.1234 readings",
             "Date 2024-03-15", "12-34-5678", "1234-56-789"]:
    neg(text, "not a valid US SSN")
for text in ["GB 12 34 56 A", "DA123456A", "AB123456E", "QQ123456C", "AO123456C",
             "BG 12 34 56 C", "NK123456B", "ZZ999999D", "AB12345C", "ab123456c"]:
    neg(f"NI {text}", "not a valid UK NI number")
for text in ["user@localhost", "icon@2x.png", "follow @handle", "name at example dot com",
             "foo@bar", "a..b@example.com", "john@example.c", "@example.com",
             "sprite@3x.jpg", "user@.example.com", "email me", "user@-", "x@y",
             "me@home now", "price 3@5.00"]:
    neg(f"Contact: {text}", "not an email address")
for text in ["sk-learn is a library", "AKIA short", "ghp_short", "xoxb-123", "sk_live_abc",
             "eyJhbGciOiJIUzI1NiJ9.notreal",
             "Commit 3f786850e387550fdab836ed7e6dc881de23001b",
             "UUID 123e4567-e89b-12d3-a456-426614174000",
             "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
             "internationalization and localization", "Supercalifragilisticexpialidocious",
             "HttpRequestHandlerFactory", "test_policy_engine_handles_unicode_2024",
             "/usr/lib/x86_64-linux-gnu/libc.so.6", "SGVsbG8gd29ybGQ=",
             "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
             "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
             "AIzaShort", "sk-this-is-not-a-real-key", "ThisIsAVeryLongCamelCaseIdentifierName",
             "my-project-name-2024-final-v2", "eyJub3QiOiJqd3QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJlcw",
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1B2",
             "com.example.android.app.MainActivity2x"]:
    neg(text, "looks like a secret but is not")
for text in ["https://example.com/path", "https://user@example.com", "git@github.com:org/repo.git",
             "http://example.com:8080/", "ssh://host:22", "https://example.com/?a=b:c@d",
             "See http://localhost:3000/login", "mailto:someone", "ftp://ftp.example.org/pub",
             "https://example.com/user:pass"]:
    neg(text, "URL without credentials")
for text in ["The archive is online", "chivalry is not dead", "a cancerous growth was ruled out",
             "precancer screening", "hepatitis B vaccine", "schizophrenic behaviour",
             "Hauptstraßen are busy", "HIVE database", "This is about Cancerian traits",
             "chive and hive", "MRN-12345 is too short", "MRN-1234567 too long",
             "XMRN-123456", "mrn-123456", "Straße"]:
    neg(text, "words inside other words, or near misses of custom detectors")
for text in ["I have 3 cats and 12 dogs.", "The quick brown fox jumps over the lazy dog.",
             "Temperature 21.5°C at 14:00", "Chapter 12.3 explains it", "Page 1 of 20",
             "We sold 1,024 units in Q2.", "See RFC 7231 section 6.5.1", "Python 3.11.4 is installed",
             "Use port 8080 for the dashboard", "Meet me in Room 2B", "Rated 4.5/5 by 1200 users",
             "ISO 8601 dates like 2024-03-15T10:00", "The ratio was 3:1", "Aisle 7, shelf 12",
             "Lot 45-B-2024", "Set width=1920 height=1080", "CPU at 98.6% load",
             "Agenda: 1) intro 2) budget 3) hiring", "Call the front desk", "E=mc^2"]:
    neg(text, "plain text")

OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
npos = sum(1 for r in rows if r["spans"])
print(f"{len(rows)} rows: {npos} positive, {len(rows) - npos} negative")
