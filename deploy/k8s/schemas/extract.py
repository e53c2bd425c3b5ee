#!/usr/bin/env python3
"""Write the openAPIV3Schema of a CustomResourceDefinition as JSON.

Usage: extract.py [--out DIR] [--version V] [--strip-descriptions] CRD.yaml|- ...

For every CustomResourceDefinition in the given YAML files (``-`` reads
stdin) it writes ``<group>_<version>_<Kind>.json`` into --out (default: this
directory). The version is the served storage version unless --version names
another served one. The JSON is the schema exactly as published, indented by
one space; --strip-descriptions drops every ``description`` string (use it
only when a file would be over ~400 KB, and say so in README.md).

It needs PyYAML: run it as ``PYTHONPATH=.tools/k8s python3 ...`` from the
repository root. See README.md for where each CRD comes from.
"""

import argparse
import json
import os
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            # "description" is also a legal property *name* (under
            # "properties"), which is a schema, not a string: keep those.
            if key == "description" and isinstance(value, str):
                continue
            out[key] = strip_descriptions(value)
        return out
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    return node


def pick_version(crd, wanted):
    versions = crd["spec"]["versions"]
    if wanted:
        for v in versions:
            if v["name"] == wanted and v.get("served"):
                return v
        raise SystemExit("%s: version %s is not served (served: %s)" % (
            crd["metadata"]["name"], wanted,
            ", ".join(v["name"] for v in versions if v.get("served"))))
    for v in versions:
        if v.get("storage") and v.get("served"):
            return v
    raise SystemExit("%s: no served storage version" % crd["metadata"]["name"])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=here)
    ap.add_argument("--version", help="served version to extract (default: the storage version)")
    ap.add_argument("--strip-descriptions", action="store_true")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    written = 0
    for path in args.files:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            version = pick_version(doc, args.version)
            schema = version["schema"]["openAPIV3Schema"]
            if args.strip_descriptions:
                schema = strip_descriptions(schema)
            name = "%s_%s_%s.json" % (doc["spec"]["group"], version["name"],
                                      doc["spec"]["names"]["kind"])
            target = os.path.join(args.out, name)
            with open(target, "w", encoding="utf-8") as f:
                json.dump(schema, f, indent=1, ensure_ascii=False)
                f.write("\n")
            print("%s  %d bytes  (served: %s; storage: %s)" % (
                target, os.path.getsize(target),
                ",".join(v["name"] for v in doc["spec"]["versions"] if v.get("served")),
                version["name"]))
            written += 1
    if not written:
        raise SystemExit("no CustomResourceDefinition found")


if __name__ == "__main__":
    main()
