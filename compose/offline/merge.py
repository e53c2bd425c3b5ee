#!/usr/bin/env python3
"""Applies an override file to a resolved Compose or stack file.

    docker stack config -c compose/stack.yml >resolved.yml
    python3 compose/offline/merge.py resolved.yml compose/offline/stack.override.yml >deploy.yml
    docker stack deploy -c deploy.yml fantasy

    docker-compose -f compose/docker-compose.yml config >resolved.yml
    python3 compose/offline/merge.py --base-escaped resolved.yml \
      compose/offline/compose.override.yml >compose.yml
    docker-compose -f compose.yml up -d

Compose's own merge (`-c stack.yml -c override.yml`) appends lists (placement
constraints, generic resources, health check commands) and cannot remove a
key, so an override could not take the GPU reservation out of the predictor
or give HAProxy a health check of its own. Here mappings merge key by key,
every other value replaces the one below it, and `null` removes the key
(a whole service, too). Top-level `x-` keys of the override (YAML anchors)
are not copied.

The override's `${NAME}` and `${NAME:-default}` are filled in from the
environment (`$$` is a literal `$`), as Compose does; the resolved file has
them filled in already. Every `$` of the result is written as `$$`, so that
`docker stack deploy` leaves the commands' own `$(...)` to their shells.
"""

import os
import re
import sys

import yaml

VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")


# Keys whose values Compose's schema wants as integers after interpolation.
INTEGERS = {"published", "target", "replicas", "max_replicas_per_node"}


def interpolate(value):
    """`value` with the environment's variables filled in."""
    if isinstance(value, dict):
        out = {k: interpolate(v) for k, v in value.items()}
        for k in INTEGERS & out.keys():
            if isinstance(out[k], str) and out[k].isdigit():
                out[k] = int(out[k])
        return out
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def fill(m):
        if m.group(1):
            return "$"
        name, default = m.group(2), m.group(3)
        found = os.environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        raise SystemExit(f"merge.py: {name} is not set (the override needs it)")

    return VARIABLE.sub(fill, value)


def escape(value):
    """`value` with every `$` doubled, for docker stack deploy."""
    if isinstance(value, dict):
        return {k: escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape(v) for v in value]
    if isinstance(value, str):
        return value.replace("$", "$$")
    return value


def merge(base, override):
    """`override` applied to `base` (neither is modified)."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif key in out:
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main(argv):
    args = argv[1:]
    # `docker-compose config` (v1) writes `$$` as it was; `docker stack
    # config` writes the `$` it stands for.
    base_escaped = "--base-escaped" in args
    args = [a for a in args if a != "--base-escaped"]
    if len(args) != 2:
        print(f"usage: {argv[0]} [--base-escaped] <resolved file> <override file>", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        base = yaml.safe_load(f)
    with open(args[1], encoding="utf-8") as f:
        override = yaml.safe_load(f)
    override = interpolate({k: v for k, v in override.items() if not str(k).startswith("x-")})
    if not base_escaped:
        base = escape(base)
    yaml.safe_dump(merge(base, escape(override)), sys.stdout, sort_keys=False, width=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
