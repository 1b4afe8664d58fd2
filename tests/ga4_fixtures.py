#!/usr/bin/env python3
"""Generates a year of a made-up municipal site's Google Analytics 4 reports,
in the two formats `tamis import ga4` reads, plus the totals tamis must
answer after importing them. Deterministic: the same seed writes the same
bytes.

    python3 tests/ga4_fixtures.py OUT_DIR [--seed N] [--year YYYY]
                                  [--first YYYY-MM-DD --days N] [--scale X]

writes OUT_DIR/json/<report>.json, OUT_DIR/csv/<report>.csv and
OUT_DIR/expected.json.

The report set and metrics are those Plausible's GA4 importer requests
(plausible/analytics lib/plausible/google/ga4/report_request.ex), "bounces"
being the metric expression `sessions - engagedSessions` answered under
its name. The JSON files have the shape of the Data API's runReport
response (developers.google.com/analytics/devguides/reporting/data/v1/rest/
v1beta/RunReportResponse): dimensionHeaders[].name, metricHeaders[].{name,
type}, rows[].dimensionValues[].value, rows[].metricValues[].value (strings),
rowCount, metadata, kind. The CSV files have the shape of GA4's
"Share this report > Download file > Download CSV": '#' comment lines
(report, account, property, segment, dates), a chart table, a blank line,
then the report's table with the interface's English column titles.
No real property's data is used.
"""

import argparse
import calendar
import datetime
import json
import os
import random

PAGES = [
    ("/", 30),
    ("/services/permis", 12),
    ("/collectes", 14),
    ("/loisirs/piscines", 8),
    ("/conseil/seances", 5),
    ("/emplois", 9),
    ("/nous-joindre", 7),
    ("/evenements", 6),
    ("/taxes", 5),
    ("/bibliotheque", 4),
]
# A page seen by one visitor on a few days only: below k, it must never
# show in a protected answer.
RARE_PAGE = "/archives/budget-1998"
RARE_DAYS = {15, 120, 300}

SOURCES = [
    # sessionSource, sessionMedium, campaign, ad content, keyword, weight
    ("(direct)", "(none)", "(direct)", "(not set)", "(not set)", 35),
    ("google", "organic", "(organic)", "(not set)", "(not provided)", 40),
    ("bing", "organic", "(organic)", "(not set)", "(not provided)", 5),
    ("facebook.com", "referral", "(referral)", "(not set)", "(not set)", 8),
    ("quebec.ca", "referral", "(referral)", "(not set)", "(not set)", 6),
    ("infolettre", "email", "collectes-2025", "bouton", "(not set)", 6),
]
# What tamis stores as `source` for each sessionSource.
SOURCE_NAMES = {
    "(direct)": "Direct / None",
    "google": "Google",
    "bing": "Bing",
    "facebook.com": "Facebook",
    "quebec.ca": "quebec.ca",
    "infolettre": "infolettre",
}

LOCATIONS = [
    # countryId, country name, region, city, weight, tamis region code
    ("CA", "Canada", "Quebec", "Montreal", 30, "CA-QC"),
    ("CA", "Canada", "Quebec", "Quebec City", 25, "CA-QC"),
    ("CA", "Canada", "Quebec", "Gatineau", 10, "CA-QC"),
    ("CA", "Canada", "Ontario", "Ottawa", 8, "CA-ON"),
    ("CA", "Canada", "Ontario", "Toronto", 4, "CA-ON"),
    ("FR", "France", "Ile-de-France", "Paris", 6, "FR-IDF"),
    ("US", "United States", "California", "San Jose", 3, "US-CA"),
    ("US", "United States", "New York", "New York", 3, "US-NY"),
    ("(not set)", "(not set)", "(not set)", "(not set)", 2, ""),
]

DEVICES = [("desktop", 52, "Desktop"), ("mobile", 43, "Mobile"), ("tablet", 5, "Tablet")]

BROWSERS = [
    ("Chrome", 50, "Chrome"),
    ("Safari", 25, "Safari"),
    ("Edge", 12, "Microsoft Edge"),
    ("Firefox", 6, "Firefox"),
    ("Samsung Internet", 4, "Samsung Browser"),
    ("Android Webview", 3, "Mobile App"),
]

SYSTEMS = [
    ("Windows", "10", 40, "Windows", "10"),
    ("iOS", "17.4.1", 22, "iOS", "17"),
    ("Android", "14", 20, "Android", "14"),
    ("Macintosh", "10.15.7", 14, "Mac", "10"),
    ("Linux", "(not set)", 4, "GNU/Linux", ""),
]

METRICS = ["totalUsers", "screenPageViews", "bounces", "sessions", "userEngagementDuration"]
TYPES = {
    "totalUsers": "TYPE_INTEGER",
    "screenPageViews": "TYPE_INTEGER",
    "bounces": "TYPE_INTEGER",
    "sessions": "TYPE_INTEGER",
    "engagedSessions": "TYPE_INTEGER",
    "userEngagementDuration": "TYPE_SECONDS",
}


def split(total, weights, rng):
    """`total` in integer parts near `weights`' shares (largest remainder,
    with a little jitter), summing to `total` exactly."""
    jittered = [w * rng.uniform(0.8, 1.2) for w in weights]
    whole = sum(jittered)
    raw = [total * w / whole for w in jittered]
    parts = [int(x) for x in raw]
    left = total - sum(parts)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[:left]:
        parts[i] += 1
    return parts


def days_of(first, count):
    for i in range(count):
        yield first + datetime.timedelta(days=i)


def day_totals(day, rng, scale):
    weekend = day.weekday() >= 5
    # Pools in summer, tax bills in March and July, holidays in December.
    season = {1: 0.9, 2: 0.95, 3: 1.15, 6: 1.2, 7: 1.35, 8: 1.25, 12: 0.8}.get(day.month, 1.0)
    users = int(420 * scale * (0.55 if weekend else 1.0) * season * rng.uniform(0.85, 1.15))
    sessions = int(users * rng.uniform(1.15, 1.35))
    pageviews = int(sessions * rng.uniform(2.0, 2.6))
    bounces = int(sessions * rng.uniform(0.38, 0.5))
    duration = int(sessions * rng.uniform(70, 120))
    return {"users": users, "sessions": sessions, "pageviews": pageviews, "bounces": bounces, "duration": duration}


def generate(first, count, seed, scale):
    rng = random.Random(seed)
    reports = {name: [] for name in [
        "visitors", "sources", "pages", "entry_pages", "locations", "devices", "browsers", "operating_systems"]}
    expected = {
        "first_day": first.isoformat(),
        "last_day": (first + datetime.timedelta(days=count - 1)).isoformat(),
        "days": 0,
        "totals": {"visitors": 0, "visits": 0, "pageviews": 0, "bounces": 0, "duration": 0},
        "months": {},
        "pages": {},
        "countries": {},
        "regions": {},
        "devices": {},
        "browsers": {},
        "os": {},
        "sources": {},
        "january_pageviews": 0,
    }

    def add(table, key, m):
        row = table.setdefault(key, {"visitors": 0, "visits": 0, "pageviews": 0})
        row["visitors"] += m["users"]
        row["visits"] += m["sessions"]
        row["pageviews"] += m["pageviews"]

    for day in days_of(first, count):
        t = day_totals(day, rng, scale)
        date = day.strftime("%Y%m%d")
        expected["days"] += 1
        for k, name in [("users", "visitors"), ("sessions", "visits"), ("pageviews", "pageviews"),
                        ("bounces", "bounces"), ("duration", "duration")]:
            expected["totals"][name] += t[k]
        month = day.strftime("%Y-%m-01")
        m = expected["months"].setdefault(month, {"visitors": 0, "visits": 0, "pageviews": 0})
        m["visitors"] += t["users"]
        m["visits"] += t["sessions"]
        m["pageviews"] += t["pageviews"]
        if day.month == 1:
            expected["january_pageviews"] += t["pageviews"]
        reports["visitors"].append(([date], t))

        def spread(weights):
            parts = {k: split(t[k], weights, rng) for k in t}
            return [{k: parts[k][i] for k in t} for i in range(len(weights))]

        for (src, medium, campaign, content, term, _), m in zip(SOURCES, spread([s[5] for s in SOURCES])):
            reports["sources"].append(([date, src, medium, campaign, content, term, "(not set)"], m))
            add(expected["sources"], SOURCE_NAMES[src], m)

        pages = list(PAGES)
        rare = day.timetuple().tm_yday in RARE_DAYS
        page_rows = spread([w for _, w in pages])
        if rare:
            # One visitor, one visit, two views, taken from the home page.
            page_rows[0] = {k: page_rows[0][k] - v for k, v in
                            {"users": 1, "sessions": 1, "pageviews": 2, "bounces": 0, "duration": 0}.items()}
            pages.append((RARE_PAGE, 0))
            page_rows.append({"users": 1, "sessions": 1, "pageviews": 2, "bounces": 0, "duration": 0})
        for (path, _), m in zip(pages, page_rows):
            host = "www.example.org" if rng.random() < 0.9 else "example.org"
            reports["pages"].append(([date, host, path], m))
            add(expected["pages"], path, m)

        for (path, _), m in zip(PAGES, spread([w for _, w in PAGES])):
            reports["entry_pages"].append(([date, path], m))

        for (cid, cname, region, city, _, code), m in zip(LOCATIONS, spread([l[4] for l in LOCATIONS])):
            reports["locations"].append(([date, cid, cname, region, city], m))
            add(expected["countries"], "" if cid == "(not set)" else cid, m)
            add(expected["regions"], code, m)

        for (device, _, name), m in zip(DEVICES, spread([d[1] for d in DEVICES])):
            reports["devices"].append(([date, device], m))
            add(expected["devices"], name, m)

        for (browser, _, name), m in zip(BROWSERS, spread([b[1] for b in BROWSERS])):
            reports["browsers"].append(([date, browser], m))
            add(expected["browsers"], name, m)

        for (os_name, version, _, name, major), m in zip(SYSTEMS, spread([s[2] for s in SYSTEMS])):
            reports["operating_systems"].append(([date, os_name, version], m))
            add(expected["os"], name, m)
    return reports, expected


DIMENSIONS = {
    "visitors": ["date"],
    "sources": ["date", "sessionSource", "sessionMedium", "sessionCampaignName",
                "sessionManualAdContent", "sessionGoogleAdsKeyword", "pageReferrer"],
    "pages": ["date", "hostName", "pagePath"],
    "entry_pages": ["date", "landingPage"],
    # The JSON reports carry countryId (as Plausible asks), the CSV ones the
    # country's name (as GA4's interface shows it).
    "locations": ["date", "countryId", "country", "region", "city"],
    "devices": ["date", "deviceCategory"],
    "browsers": ["date", "browser"],
    "operating_systems": ["date", "operatingSystem", "operatingSystemVersion"],
}

CSV_TITLES = {
    "date": "Date",
    "sessionSource": "Session source",
    "sessionMedium": "Session medium",
    "sessionCampaignName": "Session campaign",
    "sessionManualAdContent": "Session manual ad content",
    "sessionGoogleAdsKeyword": "Session Google Ads keyword text",
    "pageReferrer": "Page referrer",
    "hostName": "Hostname",
    "pagePath": "Page path and screen class",
    "landingPage": "Landing page",
    "country": "Country",
    "region": "Region",
    "city": "City",
    "deviceCategory": "Device category",
    "browser": "Browser",
    "operatingSystem": "Operating system",
    "operatingSystemVersion": "OS version",
    "totalUsers": "Total users",
    "screenPageViews": "Views",
    "sessions": "Sessions",
    "engagedSessions": "Engaged sessions",
    "userEngagementDuration": "User engagement",
}

CSV_NAMES = {
    "visitors": "Reports snapshot: Date",
    "sources": "Traffic acquisition: Session source / medium",
    "pages": "Pages and screens: Page path and screen class",
    "entry_pages": "Landing page: Landing page",
    "locations": "Demographic details: Region",
    "devices": "Tech details: Device category",
    "browsers": "Tech details: Browser",
    "operating_systems": "Tech details: Operating system",
}


def metric_value(m, name):
    return {
        "totalUsers": m["users"],
        "screenPageViews": m["pageviews"],
        "bounces": m["bounces"],
        "sessions": m["sessions"],
        "engagedSessions": m["sessions"] - m["bounces"],
        "userEngagementDuration": m["duration"],
    }[name]


def write_json(path, report, rows):
    dims = [d for d in DIMENSIONS[report] if d != "country"]
    keep = [i for i, d in enumerate(DIMENSIONS[report]) if d != "country"]
    metrics = METRICS if report != "pages" else ["totalUsers", "screenPageViews", "sessions"]
    # Plausible asks for the newest date first.
    ordered = sorted(rows, key=lambda r: r[0][0], reverse=True)
    body = {
        "dimensionHeaders": [{"name": d} for d in dims],
        "metricHeaders": [{"name": m, "type": TYPES[m]} for m in metrics],
        "rows": [
            {
                "dimensionValues": [{"value": values[i]} for i in keep],
                "metricValues": [{"value": str(metric_value(m, name))} for name in metrics],
            }
            for values, m in ordered
        ],
        "rowCount": len(ordered),
        "metadata": {"currencyCode": "CAD", "timeZone": "America/Toronto"},
        "kind": "analyticsData#runReport",
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(body, f, ensure_ascii=False, indent=1)
        f.write("\n")


def csv_cell(value):
    text = str(value)
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path, report, rows, first, last):
    dims = [d for d in DIMENSIONS[report] if d not in ("countryId", "pageReferrer")]
    keep = [i for i, d in enumerate(DIMENSIONS[report]) if d not in ("countryId", "pageReferrer")]
    # The interface shows engaged sessions, not bounces.
    metrics = (["totalUsers", "screenPageViews", "sessions", "engagedSessions", "userEngagementDuration"]
               if report != "pages" else ["totalUsers", "screenPageViews", "sessions"])
    lines = [
        "# ----------------------------------------",
        f"# {CSV_NAMES[report]}",
        "# Account: Ville d'Exemple",
        "# Property: www.example.org - GA4",
        "# ----------------------------------------",
        "#",
        "# All Users",
        f"# Start date: {first.strftime('%Y%m%d')}",
        f"# End date: {last.strftime('%Y%m%d')}",
        "Nth day,Total users",
    ]
    by_day = {}
    for values, m in rows:
        by_day[values[0]] = by_day.get(values[0], 0) + m["users"]
    for i, (_, users) in enumerate(sorted(by_day.items())):
        lines.append(f"{i:04d},{users}")
    lines.append("")
    lines.append(",".join(csv_cell(CSV_TITLES[d]) for d in dims + metrics))
    for values, m in sorted(rows, key=lambda r: r[0][0]):
        cells = [values[i] for i in keep] + [metric_value(m, name) for name in metrics]
        lines.append(",".join(csv_cell(c) for c in cells))
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--first", help="first day (default: the year's first)")
    parser.add_argument("--days", type=int, help="days from --first (default: to the year's end)")
    parser.add_argument("--scale", type=float, default=1.0, help="traffic size (1: ~420 users a weekday)")
    args = parser.parse_args()
    first = datetime.date.fromisoformat(args.first) if args.first else datetime.date(args.year, 1, 1)
    count = args.days or (366 if calendar.isleap(first.year) else 365) - first.timetuple().tm_yday + 1
    last = first + datetime.timedelta(days=count - 1)
    reports, expected = generate(first, count, args.seed, args.scale)
    for sub in ("json", "csv"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    for report, rows in reports.items():
        write_json(os.path.join(args.out, "json", f"{report}.json"), report, rows)
        write_csv(os.path.join(args.out, "csv", f"{report}.csv"), report, rows, first, last)
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
