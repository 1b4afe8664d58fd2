#!/usr/bin/env python3
"""Writes subdivisions.tsv, the ISO 3166-2 subdivisions tamis maps region
names to (src/privacy/subdivision.rs compiles it in).

    apt-get install iso-codes unicode-cldr-core
    python3 data/lists/subdivisions.py

Sources, both maintained data sets packaged by Debian:
- iso-codes (LGPL-2.1+, LICENSE.iso-codes): every ISO 3166-2 subdivision
  with its code, ISO name (in the local language, romanized), type and
  parent (/usr/share/iso-codes/json/iso_3166-2.json), and the English
  translation of those names (/usr/share/locale/en/LC_MESSAGES/
  iso_3166-2.mo: "Bayern" -> "Bavaria");
- Unicode CLDR (Unicode-DFS-2016, LICENSE.cldr): English subdivision names
  (/usr/share/unicode/cldr/common/subdivisions/en.xml: "Stockholms län"
  is "Stockholm", "Noord-Holland" is "North Holland").

One subdivision per line, sorted by code, tab-separated:

    code  type  parent  ISO name  [more names ...]

The parent is "" for a top-level subdivision. The English names are those
that differ from the ISO name, CLDR's first; there may be none. A name with
letters beyond Latin Extended-A that Unicode decomposes into a base letter
and marks ("Ad Dawḩah", "Hà Nội") is followed by its form without the marks
("Ad Dawhah", "Ha Noi"): tamis's folding knows those blocks only. Only codes
that iso-codes lists are written (CLDR also names deprecated ones).

CLDR may still use a code that ISO has since given to another subdivision
(CLDR 41 numbers Iran's provinces as before ISO's renumbering: its "ir07"
is Tehran, ISO's IR-07 is Fārs). A CLDR name that is the ISO name of
another code of the same country is therefore left out, and so are all
CLDR names of a country where that happens for more than a quarter of its
codes; what is left out is printed.
"""

import gettext
import gzip
import json
import os
import re
import sys
import unicodedata

ISO_JSON = "/usr/share/iso-codes/json/iso_3166-2.json"
ISO_EN = "/usr/share/locale/en/LC_MESSAGES/iso_3166-2.mo"
CLDR_EN = "/usr/share/unicode/cldr/common/subdivisions/en.xml"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "subdivisions.tsv")


def debian_version(package):
    path = f"/usr/share/doc/{package}/changelog.Debian.gz"
    with open(path, "rb") as f:
        return gzip.decompress(f.read()).decode().split("(", 1)[1].split(")", 1)[0]


def cldr_names():
    """CLDR's English names by ISO code ("nlnh" is NL-NH), except those of
    codes CLDR marks deprecated."""
    names = {}
    with open(CLDR_EN, encoding="utf-8") as f:
        for m in re.finditer(r'<subdivision type="([a-z]{2})([a-z0-9]+)">([^<]+)</subdivision>(.*)', f.read()):
            if "deprecated" not in m[4]:
                names[f"{m[1].upper()}-{m[2].upper()}"] = m[3]
    return names


def fold(name):
    """Lower case, without accents and punctuation, for comparing names."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if c.isalnum())


def out_of_step(subdivisions, cldr):
    """CLDR codes whose English name is another code's ISO name."""
    iso_codes = {}
    for sub in subdivisions:
        key = (sub["code"][:2], fold(iso_names(sub["name"])[0]))
        iso_codes.setdefault(key, set()).add(sub["code"])
    suspect = {}
    listed = {sub["code"] for sub in subdivisions}
    for code, english in cldr.items():
        if code not in listed:
            continue
        others = iso_codes.get((code[:2], fold(english)), set()) - {code}
        if others:
            suspect[code] = f"{english!r} is ISO's {', '.join(sorted(others))}"
    return suspect


def iso_names(name):
    """The ISO name without its bracketed variant or code ("Catalunya
    [Cataluña]", "Stockholms län [SE-01]")."""
    return [part.strip() for part in re.split(r"\[|\]", name) if part.strip()]


def without_marks(name):
    """The name without the marks of letters past Latin Extended-A, or None
    when it has none."""
    if all(ord(c) <= 0x17F or unicodedata.decomposition(c) == "" for c in name):
        return None
    out = []
    for c in name:
        if ord(c) > 0x17F:
            c = "".join(d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d))
        out.append(c)
    return "".join(out)


def main():
    with open(ISO_JSON, encoding="utf-8") as f:
        subdivisions = json.load(f)["3166-2"]
    with open(ISO_EN, "rb") as f:
        iso_english = gettext.GNUTranslations(f)
    cldr = cldr_names()
    suspect = out_of_step(subdivisions, cldr)
    countries, sizes = {}, {}
    for code in suspect:
        countries[code[:2]] = countries.get(code[:2], 0) + 1
    for sub in subdivisions:
        sizes[sub["code"][:2]] = sizes.get(sub["code"][:2], 0) + 1
    dropped_countries = {cc for cc, n in countries.items() if 4 * n > sizes[cc]}
    for code, why in sorted(suspect.items()):
        print(f"CLDR name of {code} left out: {why}", file=sys.stderr)
    for cc in sorted(dropped_countries):
        print(f"all CLDR names of {cc} left out: its codes are out of step with ISO's", file=sys.stderr)
    rows = []
    for sub in subdivisions:
        name = sub["name"]
        english = []
        code = sub["code"]
        in_step = code not in suspect and code[:2] not in dropped_countries
        for alt in (cldr.get(code, "") if in_step else "", iso_english.gettext(name)):
            if alt and alt != name and alt not in english:
                english.append(alt)
        names = []
        for each in (name, *english):
            names.append(each)
            plain = without_marks(each)
            if plain and plain not in names:
                names.append(plain)
        fields = [sub["code"], sub["type"], sub.get("parent", ""), *names]
        if any("\t" in field or "\n" in field for field in fields):
            sys.exit(f"unexpected tab or newline in {fields}")
        rows.append(fields)
    rows.sort()
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        f.write(
            f"# ISO 3166-2 subdivisions: Debian iso-codes {debian_version('iso-codes')} (LGPL-2.1+), "
            f"English names from Unicode CLDR, Debian unicode-cldr-core {debian_version('unicode-cldr-core')} "
            "(Unicode-DFS-2016). Generated by subdivisions.py; do not edit.\n"
        )
        f.write("# code\ttype\tparent\tISO name\t[more names ...]\n")
        for fields in rows:
            f.write("\t".join(fields) + "\n")


main()
