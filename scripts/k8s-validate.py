#!/usr/bin/env python3
"""Validate the Kubernetes manifests offline, strictly.

Usage: k8s-validate.py [--kubectl PATH] [--k8s-version 1.30.0,1.37.0] [DIR_OR_FILE ...]

Targets:
  * no DIR given: every overlay, deploy/k8s/overlays/*/ (each with a
    kustomization.yaml), is rendered with `kubectl kustomize`;
  * DIR with a kustomization.yaml: that one is rendered; a DIR without one
    stands for every */kustomization.yaml under it;
  * FILE (plain YAML, e.g. deploy/argocd/*.yaml): its documents are
    validated as they are, in addition to the default overlays when no DIR
    is given.

Every rendered/loaded document is checked:
  * built-in kinds against the Kubernetes OpenAPI schemas shipped by the
    kubernetes-validate package (.tools/k8s), in its strict flavour (unknown
    fields are errors), for every --k8s-version (default: 1.30.0 and 1.37.0,
    the oldest Kubernetes we claim and the newest the package ships; a kind
    or apiVersion missing from one of them is an error);
  * custom resources against the CRD schema vendored in deploy/k8s/schemas/
    (<group>_<version>_<Kind>.json, see its README.md) or against a
    CustomResourceDefinition in the same render, with the structural-schema
    semantics of the API server's strict field validation: unknown fields
    are errors unless x-kubernetes-preserve-unknown-fields, nullable allows
    null, x-kubernetes-int-or-string allows integer or string, list-type
    set/map entries must be unique. metadata is checked loosely (name, and
    labels/annotations are strings). CEL rules (x-kubernetes-validations)
    and `format` are not evaluated;
  * a kind that is neither built in nor vendored is an error;
  * metadata.name is required, and no two objects of one render may share
    group/kind/namespace/name.

Output: one line per target with the objects validated by kind, preceded by
errors as `target: Kind/name: path.to.field: message`. Exit status 1 on any
error, 2 on a usage error.
"""

import argparse
import collections
import concurrent.futures
import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, ".tools", "k8s")
if not os.path.isdir(os.path.join(TOOLS, "kubernetes_validate")):
    sys.exit("k8s-validate: %s/kubernetes_validate is missing; install it with\n"
             "  bash scripts/setup.sh (kubernetes-validate in .tools/k8s, kubectl in .tools/kubectl)"
             % os.path.relpath(TOOLS))
sys.path.insert(0, TOOLS)

import jsonschema  # noqa: E402
import yaml  # noqa: E402
from kubernetes_validate import utils as kv  # noqa: E402
from packaging.version import Version  # noqa: E402
from referencing import Registry, Resource  # noqa: E402

DEFAULT_VERSIONS = ["1.30.0", "1.37.0"]
SCHEMA_DIR = os.path.join(ROOT, "deploy", "k8s", "schemas")
OVERLAYS = os.path.join(ROOT, "deploy", "k8s", "overlays")
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


# ---------------------------------------------------------------- YAML ----

class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader as the API machinery reads YAML: timestamps stay strings,
    a duplicate mapping key is an error."""


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    out = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found an unhashable key", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "duplicate key %r (first at line %d)" % (key, seen[key] + 1), key_node.start_mark)
        seen[key] = key_node.start_mark.line
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


def _construct_value(loader, node):  # a bare "=" (pyyaml issue 89), as kubernetes-validate does
    return str(node.value)


StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:value", _construct_value)


def load_documents(text):
    docs = []
    for doc in yaml.load_all(text, Loader=StrictLoader):
        if doc is None:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str) \
                and doc["kind"].endswith("List") and isinstance(doc.get("items"), list) \
                and doc.get("apiVersion") == "v1":
            docs.extend(doc["items"])
        else:
            docs.append(doc)
    return docs


# ------------------------------------------------------------- helpers ----

def split_api_version(api_version):
    group, _, version = api_version.rpartition("/")
    return group, version


def fmt_path(parts):
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += "[%d]" % p
        else:
            p = str(p)
            if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", p):
                out += ("." if out else "") + p
            else:
                out += "[%s]" % json.dumps(p)
    return out or "(root)"


def short(value, limit=60):
    if value is None:
        return ""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def explain(error):
    """(path parts, message) pairs for one jsonschema error."""
    path = list(error.absolute_path)
    v = error.validator
    if v == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extras = [k for k in error.instance
                  if k not in known and not any(re.search(p, k) for p in patterns)]
        if extras:
            return [(path + [k], "unknown field %s" % json.dumps(k)) for k in extras]
    if v == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        if missing:
            return [(path + [missing.group(1)], "required field is missing")]
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return [(path, ("expected %s, got %s %s" % (want, json_type(error.instance), short(error.instance))).rstrip())]
    if v in ("anyOf", "oneOf") and error.context:
        subs = [e for e in error.context if not e.relative_path]
        if subs and all(e.validator == "type" for e in subs) and len(subs) == len(error.context):
            wants = []
            for e in subs:
                for t in (e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]):
                    if t not in wants:
                        wants.append(t)
            return [(path, ("expected %s, got %s %s" % (" or ".join(wants), json_type(error.instance),
                                                        short(error.instance))).rstrip())]
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            return [(p, "%s (no %s alternative fits)" % (m, v)) for p, m in explain(best)]
    if v == "enum":
        return [(path, "%s is not one of %s" % (short(error.instance), short(error.validator_value, 200)))]
    message = error.message
    if len(message) > 300:
        message = message[:297] + "..."
    return [(path, message)]


# ----------------------------------------------------- built-in kinds ----

class BuiltIn:
    """The strict schemas of kubernetes-validate for one Kubernetes version,
    resolved as kubernetes_validate.validate() does, loaded once."""

    def __init__(self, version):
        self.version = version
        self.dir = "kubernetes-json-schema/v%s-local-strict" % version
        defs = kv.schema_contents(self.dir + "/_definitions.json", version)
        self.registry = Resource.from_contents(defs) @ Registry()
        self.validators = {}

    def validator(self, group, version, kind, api_version):
        key = (group, version, kind)
        if key not in self.validators:
            # kubernetes_validate.validate(): "apps/v1" -> "apps-v1",
            # "rbac.authorization.k8s.io/v1" -> "rbac-v1", "v1" -> "v1"
            api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
            try:
                schema = kv.schema_contents("%s/%s-%s.json" % (self.dir, kind.lower(), api), self.version)
            except FileNotFoundError:
                schema = None
            # only top-level kinds of exactly this group/version (not e.g.
            # DeploymentSpec, nor apps.example.com/v1 Deployment)
            if schema is not None and {"group": group, "version": version, "kind": kind} \
                    not in schema.get("x-kubernetes-group-version-kind", []):
                schema = None
            self.validators[key] = None if schema is None else jsonschema.Draft202012Validator(
                schema, registry=Resource.from_contents(schema) @ self.registry)
        return self.validators[key]


# --------------------------------------------------------- CRD schemas ----

LOOSE_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

DROP = {"description", "example", "externalDocs", "default", "x-kubernetes-validations",
        "x-kubernetes-map-type", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
        "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource", "nullable", "format"}


def structural(s, strict=True):
    """OpenAPI v3 structural schema (CRD) -> JSON Schema draft 4.

    strict=False inside allOf/anyOf/oneOf/not, which in a structural schema
    only add value validations (no types, no pruning)."""
    if not isinstance(s, dict):
        return s
    out = {}
    for key, value in s.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: structural(sub, strict) for name, sub in value.items()}
        elif key == "items":
            out[key] = [structural(x, strict) for x in value] if isinstance(value, list) \
                else structural(value, strict)
        elif key == "additionalProperties":
            out[key] = structural(value, strict) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural(x, False) for x in value]
        elif key == "not":
            out[key] = structural(value, False)
        elif key not in DROP:
            out[key] = value
    preserve = s.get("x-kubernetes-preserve-unknown-fields") is True
    if s.get("x-kubernetes-int-or-string") is True:
        out["type"] = ["integer", "string"]
        # kubebuilder also writes anyOf: [{type: integer}, {type: string}]:
        # the same check, reported once
        if out.get("anyOf") == [{"type": "integer"}, {"type": "string"}]:
            del out["anyOf"]
    if s.get("x-kubernetes-embedded-resource") is True:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", LOOSE_METADATA)
    if s.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types + ["null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = list(out["enum"]) + [None]
    if strict and s.get("type") == "object" and not preserve and "additionalProperties" not in s:
        out["additionalProperties"] = False  # pruned, i.e. rejected by strict field validation
    lt = s.get("x-kubernetes-list-type")
    if lt == "set":
        out["uniqueItems"] = True
    elif lt == "map" and s.get("x-kubernetes-list-map-keys"):
        out["x-list-map-keys"] = s["x-kubernetes-list-map-keys"]
    return out


def _list_map_keys(validator, keys, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    seen = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                "duplicate entry for key %s (also at index %d)" % (
                    ", ".join("%s=%s" % (k, short(item.get(k))) for k in keys), seen[key]),
                path=[i])
        else:
            seen[key] = i


CRDValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-list-map-keys": _list_map_keys})


def crd_validator(openapi_schema):
    schema = structural(openapi_schema)
    schema.setdefault("properties", {})
    schema["properties"]["metadata"] = LOOSE_METADATA
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["type"] = "object"
    return CRDValidator(schema)


class Vendored:
    def __init__(self, directory):
        self.files = {}
        for path in glob.glob(os.path.join(directory, "*.json")):
            parts = os.path.basename(path)[:-5].split("_")
            if len(parts) == 3:
                self.files[tuple(parts)] = path

    @functools.lru_cache(maxsize=None)
    def validator(self, group, version, kind):
        path = self.files.get((group, version, kind))
        if path is None:
            return None
        with open(path, encoding="utf-8") as f:
            return crd_validator(json.load(f))

    def versions_of(self, group, kind):
        return sorted(v for g, v, k in self.files if g == group and k == kind)


# ------------------------------------------------------------ checking ----

class Target:
    def __init__(self, label, kind, path):
        self.label, self.kind, self.path = label, kind, path
        self.errors = []
        self.counts = collections.Counter()

    def error(self, obj, path, message):
        self.errors.append("%s: %s: %s: %s" % (self.label, obj, path, message))


def render(target, kubectl):
    if target.kind == "file":
        with open(target.path, encoding="utf-8") as f:
            return f.read()
    proc = subprocess.run([kubectl, "kustomize", target.path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("kubectl kustomize failed (exit %d): %s" % (proc.returncode, proc.stderr.strip()))
    return proc.stdout


def check(target, text, builtins, vendored):
    try:
        docs = load_documents(text)
    except yaml.YAMLError as e:
        target.errors.append("%s: invalid YAML: %s" % (target.label, str(e).replace("\n", " ")))
        return

    # CRDs shipped in the same render validate their own custom resources
    local_crds = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition" \
                and str(doc.get("apiVersion", "")).startswith("apiextensions.k8s.io/"):
            spec = doc.get("spec") or {}
            for v in spec.get("versions") or []:
                schema = (v.get("schema") or {}).get("openAPIV3Schema")
                if v.get("served") and schema:
                    local_crds[(spec.get("group"), v.get("name"), (spec.get("names") or {}).get("kind"))] = schema

    seen = {}
    for index, doc in enumerate(docs):
        where = "document %d" % (index + 1)
        if not isinstance(doc, dict):
            target.error(where, "(root)", "not a mapping but %s" % json_type(doc))
            continue
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        metadata = doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        obj = "%s/%s" % (kind if isinstance(kind, str) else "?", name if isinstance(name, str) and name else where)
        if not isinstance(api_version, str) or not api_version:
            target.error(obj, "apiVersion", "required field is missing")
            continue
        if not isinstance(kind, str) or not kind:
            target.error(obj, "kind", "required field is missing")
            continue
        if not isinstance(name, str) or not name:
            target.error(obj, "metadata.name", "required field is missing")
        group, version = split_api_version(api_version)
        if isinstance(name, str) and name:
            namespace = metadata.get("namespace") or ""
            key = (group, kind, namespace, name)
            if key in seen:
                target.error(obj, "metadata.name", "duplicate object %s %s/%s%s (also %s)" % (
                    group or "core", kind, namespace + "/" if namespace else "", name, seen[key]))
            else:
                seen[key] = where

        validator = None
        if (group, version, kind) in local_crds:
            validator = crd_validator(local_crds[(group, version, kind)])
        elif vendored.validator(group, version, kind) is not None:
            validator = vendored.validator(group, version, kind)
        if validator is not None:
            reported = set()
            for e in validator.iter_errors(doc):
                for path, message in explain(e):
                    if (fmt_path(path), message) not in reported:
                        reported.add((fmt_path(path), message))
                        target.error(obj, fmt_path(path), message)
            target.counts[kind] += 1
            continue

        found = {b.version: b.validator(group, version, kind, api_version) for b in builtins}
        if not any(found.values()):
            other = vendored.versions_of(group, kind)
            hint = (" (vendored: %s)" % ", ".join("%s/%s" % (group, v) for v in other)) if other else ""
            target.error(obj, "kind", "unknown kind %s %s: neither built into Kubernetes %s nor a CRD "
                         "schema in deploy/k8s/schemas%s" % (
                             api_version, kind, "/".join(b.version for b in builtins), hint))
            continue
        messages = collections.OrderedDict()
        for b in builtins:
            v = found[b.version]
            if v is None:
                messages.setdefault(("apiVersion", "%s %s is not served by this Kubernetes version"
                                     % (api_version, kind)), []).append(b.version)
                continue
            for e in v.iter_errors(doc):
                for path, message in explain(e):
                    messages.setdefault((fmt_path(path), message), []).append(b.version)
        for (path, message), versions in messages.items():
            if len(versions) < len(builtins):
                message += " [k8s %s]" % ", ".join(versions)
            target.error(obj, path, message)
        target.counts[kind] += 1


def label(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def collect_targets(paths, parser):
    targets = []
    dirs = [p for p in paths if os.path.isdir(p)]
    files = [p for p in paths if not os.path.isdir(p)]
    for f in files:
        if not os.path.isfile(f):
            parser.error("no such file or directory: %s" % f)

    def kustomize_dirs(d):
        if any(os.path.isfile(os.path.join(d, n)) for n in KUSTOMIZATION_NAMES):
            return [d]
        found = sorted({os.path.dirname(p) for n in KUSTOMIZATION_NAMES
                        for p in glob.glob(os.path.join(d, "*", n))})
        if not found:
            parser.error("%s: no kustomization.yaml in it or in its subdirectories" % d)
        return found

    if not dirs:
        if not glob.glob(os.path.join(OVERLAYS, "*", "kustomization.y*ml")):
            parser.error("no overlays in %s (validated by default when no DIR is named): name a DIR"
                         % label(OVERLAYS))
        dirs = [OVERLAYS]
    for d in dirs:
        for k in kustomize_dirs(d):
            targets.append(Target(label(k), "kustomize", k))
    for f in files:
        targets.append(Target(label(f), "file", f))
    return targets


def main():
    parser = argparse.ArgumentParser(
        usage="%(prog)s [--kubectl PATH] [--k8s-version 1.33.0] [DIR_OR_FILE ...]",
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (head -40 scripts/k8s-validate.py) for the details.")
    parser.add_argument("--kubectl", default=os.environ.get("KUBECTL"),
                        help="kubectl with kustomize (default: .tools/kubectl/bin/kubectl, else kubectl on PATH)")
    parser.add_argument("--k8s-version", action="append", metavar="X.Y[.Z][,...]",
                        help="Kubernetes version(s) to validate built-in kinds against; repeat or "
                        "comma-separate (default: %s); shipped: %s" % (
                            ",".join(DEFAULT_VERSIONS), ", ".join(sorted(set(map(kv.major_minor, kv.all_versions())), key=Version))))
    parser.add_argument("--schema-dir", default=SCHEMA_DIR, help=argparse.SUPPRESS)
    parser.add_argument("targets", nargs="*", metavar="DIR_OR_FILE")
    args = parser.parse_args()

    shipped = {kv.major_minor(v): v for v in kv.all_versions()}
    versions = []
    for item in args.k8s_version or DEFAULT_VERSIONS:
        for v in filter(None, (x.strip().lstrip("v") for x in item.split(","))):
            mm = kv.major_minor(v)
            if mm not in shipped:
                parser.error("Kubernetes %s: kubernetes-validate ships %s to %s only" % (
                    v, kv.all_versions()[0], kv.all_versions()[-1]))
            if shipped[mm] not in versions:
                versions.append(shipped[mm])
    versions.sort(key=Version)

    targets = collect_targets(args.targets, parser)
    kubectl = args.kubectl
    if kubectl is None and any(t.kind == "kustomize" for t in targets):
        bundled = os.path.join(ROOT, ".tools", "kubectl", "bin", "kubectl")
        kubectl = bundled if os.access(bundled, os.X_OK) else shutil.which("kubectl")
        if kubectl is None:
            parser.error("no kubectl: pass --kubectl PATH")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        rendered = [pool.submit(render, t, kubectl) for t in targets]
        builtins = [BuiltIn(v) for v in versions]
        vendored = Vendored(args.schema_dir)
        failed = False
        for t, future in zip(targets, rendered):
            try:
                text = future.result()
            except (OSError, RuntimeError) as e:
                t.errors.append("%s: %s" % (t.label, e))
            else:
                check(t, text, builtins, vendored)
            for line in t.errors:
                print(line)
            total = sum(t.counts.values())
            summary = ", ".join("%s %d" % (k, n) for k, n in sorted(t.counts.items()))
            print("%s: %s %d object%s (%s) against k8s %s%s" % (
                t.label, "FAIL" if t.errors else "ok", total, "" if total == 1 else "s",
                summary or "none", "/".join(kv.major_minor(v) for v in versions),
                ", %d error%s" % (len(t.errors), "" if len(t.errors) == 1 else "s") if t.errors else ""))
            failed = failed or bool(t.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
