#!/usr/bin/env python3
"""Validate Kubernetes manifests against Istio's own CRD schemas, offline (docs/istio.md).

  validate.py check  --crds CRDS.yaml FILE...      every document must be valid
  validate.py refuse --crds CRDS.yaml FILE...      every file must be refused, with the
                                                   message its `# expect: ...` line names
  validate.py envoy-config --base envoy/envoy.yaml --out OUT.yaml WASMPLUGIN.yaml
                                                   the WasmPlugin's pluginConfig inside the
                                                   `make run` Envoy config, for check-config

CRDS.yaml is kubernetes/customresourcedefinitions.gen.yaml of the istio.io/api Go module:
the schemas istiod's API server registers. Each Istio document is checked against its
version's openAPIV3Schema the way the API server does with strict field validation
(`kubectl apply --validate=strict`): unknown fields are errors, types, enums, patterns,
bounds, int32 ranges, required fields, and the `x-kubernetes-validations` CEL rules
(evaluated with cel-python, plus the Kubernetes URL functions the rules use). The core
kinds used here (ConfigMap) get a small schema of their own. Anything else is refused:
an unknown kind would never be checked.
"""
import argparse
import copy
import json
import re
import sys
import urllib.parse

import celpy
import jsonschema
import yaml

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Core kinds these manifests use (no CRD ships them): the fields a ConfigMap may have.
CONFIGMAP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"const": "v1"},
        "kind": {"const": "ConfigMap"},
        "metadata": {"type": "object"},
        "data": {"type": "object", "additionalProperties": {"type": "string"}},
        "binaryData": {"type": "object", "additionalProperties": {"type": "string"}},
        "immutable": {"type": "boolean"},
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1)}


def to_json_schema(s):
    """A structural OpenAPI v3 schema as a strict JSON schema (draft 7)."""
    s = copy.deepcopy(s)

    def conv(n):
        if not isinstance(n, dict):
            return n
        n.pop("description", None)
        n.pop("x-kubernetes-validations", None)
        n.pop("x-kubernetes-list-type", None)
        n.pop("x-kubernetes-list-map-keys", None)
        n.pop("x-kubernetes-map-type", None)
        for k in ("properties",):
            if k in n:
                n[k] = {p: conv(v) for p, v in n[k].items()}
        for k in ("items", "additionalProperties", "not"):
            if isinstance(n.get(k), dict):
                n[k] = conv(n[k])
        for k in ("oneOf", "anyOf", "allOf"):
            if k in n:
                n[k] = [conv(v) for v in n[k]]
        fmt = n.get("format")
        if fmt in INT_RANGES and n.get("type") == "integer":
            lo, hi = INT_RANGES[fmt]
            n.setdefault("minimum", lo)
            n.setdefault("maximum", hi)
        if n.pop("x-kubernetes-int-or-string", False):
            n.pop("type", None)
            n["anyOf"] = n.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
        preserve = n.pop("x-kubernetes-preserve-unknown-fields", False)
        if n.get("type") == "object" and "properties" in n and "additionalProperties" not in n and not preserve:
            n["additionalProperties"] = False
        if n.pop("nullable", False) and "type" in n:
            n["type"] = [n["type"], "null"]
        return n

    return conv(s)


# The Kubernetes CEL library functions the Istio rules call (k8s.io/apiserver's `url` lib).
def _is_url(s):
    s = str(s)
    try:
        u = urllib.parse.urlsplit(s)
    except ValueError:
        return celpy.celtypes.BoolType(False)
    return celpy.celtypes.BoolType(bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", s)) and (bool(u.netloc) or bool(u.path)))


def _get_scheme(u):
    return celpy.celtypes.StringType(urllib.parse.urlsplit(str(u)).scheme)


def _get_host(u):
    return celpy.celtypes.StringType(urllib.parse.urlsplit(str(u)).netloc)


CEL_FUNCTIONS = {"isURL": _is_url, "url": lambda s: s, "getScheme": _get_scheme, "getHost": _get_host}
_cel_env = celpy.Environment()
_cel_cache = {}


def cel_errors(schema, value, path):
    """Evaluate every x-kubernetes-validations rule along `value` (nodes that are present)."""
    out = []
    if not isinstance(schema, dict) or value is None:
        return out
    for v in schema.get("x-kubernetes-validations", []):
        rule = v["rule"]
        if rule not in _cel_cache:
            _cel_cache[rule] = _cel_env.program(_cel_env.compile(rule), functions=CEL_FUNCTIONS)
        try:
            ok = _cel_cache[rule].evaluate({"self": celpy.json_to_cel(value)})
        except Exception as e:  # a rule that cannot be evaluated is a failure, not a pass
            out.append(f"{path or '.'}: CEL rule not evaluated ({rule!r}): {e}")
            continue
        if isinstance(ok, celpy.CELEvalError) or not bool(ok):
            out.append(f"{path or '.'}: {v.get('message') or 'failed rule ' + repr(rule)}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None
        for k, child in value.items():
            sub = props.get(k, extra)
            if sub is not None:
                out += cel_errors(sub, child, f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            out += cel_errors(schema["items"], child, f"{path}[{i}]")
    return out


def load_crds(path):
    index = {}
    with open(path) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for ver in spec["versions"]:
                index[(spec["group"], ver["name"], spec["names"]["kind"])] = ver
    if not index:
        sys.exit(f"{path}: no CustomResourceDefinition")
    return index


def check_doc(doc, crds):
    """The errors of one document (empty: valid)."""
    if not isinstance(doc, dict):
        return ["not a YAML mapping"]
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return ["apiVersion and kind are required"]
    errs = []
    meta = doc.get("metadata")
    for e in jsonschema.Draft7Validator(METADATA).iter_errors(meta if meta is not None else {}):
        errs.append(f".metadata{''.join('.' + str(p) for p in e.absolute_path)}: {e.message}")
    if isinstance(meta, dict):
        if isinstance(meta.get("name"), str) and not DNS1123_SUBDOMAIN.match(meta["name"]):
            errs.append(f".metadata.name: {meta['name']!r} is not a DNS-1123 subdomain")
        if isinstance(meta.get("namespace"), str) and not DNS1123_LABEL.match(meta["namespace"]):
            errs.append(f".metadata.namespace: {meta['namespace']!r} is not a DNS-1123 label")
    if (api, kind) == ("v1", "ConfigMap"):
        schema, raw = CONFIGMAP, None
    else:
        group, _, version = api.rpartition("/")
        ver = crds.get((group, version, kind))
        if ver is None:
            known = sorted({f"{g}/{v} {k}" for (g, v, k) in crds if k == kind})
            return errs + [f"{api} {kind}: no such kind in Istio's CRDs" + (f" (known: {', '.join(known)})" if known else "")]
        if not ver.get("served", False):
            errs.append(f"{api} {kind}: version {version} is not served")
        raw = ver["schema"]["openAPIV3Schema"]
        schema = to_json_schema(raw)
        schema.setdefault("properties", {}).update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
        schema["additionalProperties"] = False
    for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        errs.append(f".{'.'.join(str(p) for p in e.absolute_path)}: {e.message}")
    if raw is not None:
        errs += cel_errors(raw, doc, "")
    return errs


def check_files(files, crds):
    """(file, document index, name, errors) for every document."""
    out = []
    for path in files:
        with open(path) as f:
            try:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                out.append((path, 0, "?", [f"not YAML: {e}"]))
                continue
        if not docs:
            out.append((path, 0, "?", ["no document"]))
        for i, d in enumerate(docs):
            name = f"{d.get('kind', '?')}/{(d.get('metadata') or {}).get('name', '?')}" if isinstance(d, dict) else "?"
            out.append((path, i, name, check_doc(d, crds)))
    return out


def stats_tags_match(files, base):
    """The bootstrap-override ConfigMaps carry envoy/envoy.yaml's stats tag rules, verbatim."""
    with open(base) as f:
        want = yaml.safe_load(f)["stats_config"]["stats_tags"]
    errs = []
    for path in files:
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if isinstance(d, dict) and d.get("kind") == "ConfigMap" and "custom_bootstrap.json" in (d.get("data") or {}):
                    try:
                        got = json.loads(d["data"]["custom_bootstrap.json"])["stats_config"]["stats_tags"]
                    except (ValueError, KeyError, TypeError) as e:
                        errs.append(f"{path}: custom_bootstrap.json: no stats_config.stats_tags ({e})")
                        continue
                    if got != want:
                        errs.append(f"{path}: custom_bootstrap.json's stats_tags differ from {base}'s stats_config")
    return errs


def cmd_check(a):
    crds = load_crds(a.crds)
    bad = 0
    for path, i, name, errs in check_files(a.files, crds):
        if errs:
            bad += 1
            for e in errs:
                print(f"FAIL {path} [{i}] {name}: {e}")
        else:
            print(f"ok   {path} [{i}] {name}")
    if a.stats_base:
        for e in stats_tags_match(a.files, a.stats_base):
            bad += 1
            print(f"FAIL {e}")
    if bad:
        sys.exit(f"{bad} invalid")


def cmd_refuse(a):
    crds = load_crds(a.crds)
    bad = 0
    for path in a.files:
        with open(path) as f:
            expect = [l.split(":", 1)[1].strip() for l in f if l.startswith("# expect:")]
        if not expect:
            sys.exit(f"{path}: no `# expect: <message>` line")
        errs = [e for (_, _, _, es) in check_files([path], crds) for e in es]
        missing = [x for x in expect if not any(x in e for e in errs)]
        if not errs:
            bad += 1
            print(f"FAIL {path}: accepted, but it is broken ({'; '.join(expect)})")
        elif missing:
            bad += 1
            print(f"FAIL {path}: refused, but not for {missing}: {errs}")
        else:
            print(f"ok   {path}: refused: {'; '.join(errs)}")
    if bad:
        sys.exit(f"{bad} broken manifests not refused as expected")


def cmd_envoy_config(a):
    with open(a.wasmplugin) as f:
        plugins = [d for d in yaml.safe_load_all(f) if isinstance(d, dict) and d.get("kind") == "WasmPlugin"]
    if len(plugins) != 1:
        sys.exit(f"{a.wasmplugin}: expected one WasmPlugin, found {len(plugins)}")
    pc = plugins[0].get("spec", {}).get("pluginConfig")
    if not isinstance(pc, dict):
        sys.exit(f"{a.wasmplugin}: the WasmPlugin has no pluginConfig")
    with open(a.base) as f:
        cfg = yaml.safe_load(f)
    # Validation binds nothing, but keep the generated file harmless to run: ports 0.
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    found = 0
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = 0
        for chain in listener["filter_chains"]:
            for nf in chain["filters"]:
                for hf in nf.get("typed_config", {}).get("http_filters", []):
                    if hf.get("name") == "envoy.filters.http.wasm":
                        # Istio hands pluginConfig to the filter as its JSON configuration.
                        # failure_policy stays the base's FAIL_RELOAD (the WasmPlugin's
                        # FAIL_OPEN would let a plugin that fails to configure pass).
                        hf["typed_config"]["config"]["configuration"]["value"] = json.dumps(pc, indent=2)
                        found += 1
    if found != 1:
        sys.exit(f"{a.base}: expected one envoy.filters.http.wasm filter, found {found}")
    # The sidecar's cluster for the rate limit service (Istio creates it from the Service or
    # ServiceEntry): an HTTP/2 cluster of that name.
    cluster = (pc.get("global") or {}).get("cluster")
    if cluster and not any(c["name"] == cluster for c in cfg["static_resources"]["clusters"]):
        cfg["static_resources"]["clusters"].append({
            "name": cluster,
            "connect_timeout": "1s",
            "type": "STATIC",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 8081}}}}]}]},
        })
    with open(a.out, "w") as f:
        f.write(f"# Generated by tests/istio/validate.py from {a.wasmplugin} and {a.base}: do not edit.\n")
        yaml.safe_dump(cfg, f, sort_keys=False, width=1000)
    print(f"{a.out}: {a.wasmplugin}'s pluginConfig in {a.base}" + (f" (+ cluster {cluster})" if cluster else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--crds", required=True)
    c.add_argument("--stats-base", help="envoy.yaml whose stats_config the ConfigMaps must carry")
    c.add_argument("files", nargs="+")
    r = sub.add_parser("refuse")
    r.add_argument("--crds", required=True)
    r.add_argument("files", nargs="+")
    e = sub.add_parser("envoy-config")
    e.add_argument("--base", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("wasmplugin")
    a = p.parse_args()
    {"check": cmd_check, "refuse": cmd_refuse, "envoy-config": cmd_envoy_config}[a.cmd](a)


if __name__ == "__main__":
    main()
