"""Every way a spec can be wrong, as real files under spec_cases/, with the exact messages.

Each case is a file or a folder of files; the test loads it from inside spec_cases/ (so files are
named relative to it, as they are for a user running enova from their repository) and compares
the complete list of issues, line numbers included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enova.errors import SpecError
from enova.spec import load_specs

CASES = Path(__file__).parent / "spec_cases"

TABLE = {
    "yaml_syntax.yaml": [
        "yaml_syntax.yaml:7: invalid YAML: mapping values are not allowed here",
    ],
    "unknown_key.yaml": [
        "unknown_key.yaml:7 spec.replicaz: unknown field; expected one of: docker, engine, image, model, replicas,"
        " resources, runtime, scaling, serving, slo; did you mean 'replicas'?",
    ],
    "wrong_type.yaml": [
        "wrong_type.yaml:7 spec.replicas: must be an integer (got 'two')",
        # a wrong type is reported where the value starts, not at its key
        "wrong_type.yaml:10 spec.engine.args: must be a mapping (got ['max_num_seqs'])",
        "wrong_type.yaml:11 spec.resources.gpus: must be an integer (got '1')",
    ],
    "missing_reference": [
        'missing_reference/load.yaml:7 spec.target: no Deployment named "smolm2"'
        " (defined: smollm2 in missing_reference/app.yaml)",
        'missing_reference/load.yaml:9 spec.slo: no SLO named "chat" (no SLO is defined)',
    ],
    "duplicate_name": [
        'duplicate_name/b.yaml:5 metadata.name: duplicate Deployment "smollm2"; first defined at duplicate_name/a.yaml:3',
    ],
    "negative_replicas.yaml": [
        "negative_replicas.yaml:7 spec.replicas: must be >= 0 (got -1)",
    ],
    "hyphenated_engine_arg.yaml": [
        "hyphenated_engine_arg.yaml:10 spec.engine.args.max-num-seqs: use snake_case: max_num_seqs",
    ],
    "reserved_engine_arg.yaml": [
        "reserved_engine_arg.yaml:9 spec.engine.args.port: reserved; set by enova",
        "reserved_engine_arg.yaml:10 spec.engine.args.served-model-name: reserved; set from metadata.name",
    ],
    "unknown_builtin.yaml": [
        "unknown_builtin.yaml:6 spec.model: unknown builtin model; known: smollm2-135m-instruct (got 'builtin:smollm3')",
    ],
    "unknown_kind.yaml": [
        "unknown_kind.yaml:2 kind: unknown kind; expected one of: Deployment, Gateway, LoadProfile, Monitoring, SLO (got 'Deploymnet');"
        " did you mean 'Deployment'?",
    ],
    "missing_field.yaml": [
        # a missing field is reported at its parent mapping
        "missing_field.yaml:5 spec.model: required field missing",
        "missing_field.yaml:11 spec.arrival: required field missing",
    ],
    "duplicate_key.yaml": [
        "duplicate_key.yaml:8 spec.replicas: duplicate key; first at line 7",
    ],
    "not_a_mapping.yaml": [
        "not_a_mapping.yaml:3: a document must be a mapping with apiVersion, kind, metadata and spec"
        " (got [{'apiVersion': 'enova/v1', 'kind': 'Deployment'}])",
    ],
    "arrival_rules.yaml": [
        "arrival_rules.yaml:6 spec.arrival.burstiness: required with process 'gamma'",
        "arrival_rules.yaml:9 spec.arrival.trace: only used with process 'trace' (process is 'gamma')"
        " (got 'traces/chat.jsonl')",
        "arrival_rules.yaml:10 spec.duration: must be a duration such as 500ms, 60s, 5m or 1h30m,"
        " or a number of seconds (got '90x')",
        "arrival_rules.yaml:15 spec: set at least one objective: ttft_p95_ms, itl_p95_ms, e2e_p99_ms, max_error_rate",
    ],
    "bad_version_and_runtime.yaml": [
        "bad_version_and_runtime.yaml:1 apiVersion: unknown apiVersion; expected one of: enova/v1 (got 'enova/v2')",
        "bad_version_and_runtime.yaml:4 metadata.name: must be a DNS-1123 label: lowercase letters, digits and '-',"
        " starting and ending with a letter or digit (got 'SmolLM2')",
        "bad_version_and_runtime.yaml:6 spec.model: must be builtin:<name>, a Hugging Face id (org/name)"
        " or a local folder (./path, /path or ~/path) (got 'smollm2')",
        "bad_version_and_runtime.yaml:7 spec.runtime: must be one of: local, docker (got 'kubernetes')",
    ],
    "docker_without_image.yaml": [
        "docker_without_image.yaml:5 spec.image: required for a CPU deployment with runtime docker (the default"
        " vllm/vllm-openai:v0.11.0 is vLLM's CUDA build)",
        "docker_without_image.yaml:17 spec.image: only used with runtime docker (got 'vllm/vllm-openai:v0.11.0')",
        "docker_without_image.yaml:27 spec.docker.shm_size: string should match pattern '^[0-9]+[bkmg]?$' (got 'lots')",
    ],
    "unquoted_boolean_name.yaml": [
        "unquoted_boolean_name.yaml:3 metadata.name: must be a string (got False); YAML reads"
        " yes/no/on/off/true/false/null unquoted as that value: quote it",
    ],
    "two_defaults.yaml": [
        'two_defaults.yaml:14 spec.serving.default: only one deployment may be the default; "a" at'
        " two_defaults.yaml:3 is too",
    ],
    "two_gateways.yaml": [
        "two_gateways.yaml:7 kind: only one Gateway document is allowed; first at two_gateways.yaml:3",
        "two_gateways.yaml:9 spec.hostt: unknown field; expected one of: enabled, host, max_body_bytes,"
        " otlp_endpoint, port, queue_size, queue_timeout, service_name, token_file; did you mean 'host'?",
        "two_gateways.yaml:9 spec.port: must be <= 65535 (got 99999)",
    ],
    "reserved_engine_env.yaml": [
        "reserved_engine_env.yaml:10 spec.engine.env.LD_PRELOAD: reserved; could hijack the engine process",
        "reserved_engine_env.yaml:11 spec.engine.env.CUDA_VISIBLE_DEVICES: reserved; enova sets it for every replica",
        "reserved_engine_env.yaml:12 spec.engine.env.ENOVA_CONFIG_HASH: reserved; ENOVA_* are enova's own variables",
        "reserved_engine_env.yaml:13 spec.engine.env.WATCHDOG_USEC: reserved; WATCHDOG_* are systemd's, for enova's"
        " own service",
    ],
    "gateway_beyond_loopback.yaml": [
        # no token_file line to point at: the line of its mapping
        "gateway_beyond_loopback.yaml:4 spec.token_file: required when host (0.0.0.0) is beyond loopback: anyone who"
        " reaches it could use every model; set a token file, or bind 127.0.0.1",
    ],
    "alias_bomb.yaml": [
        # "billion laughs": refused before it is expanded, at the first value too big
        "alias_bomb.yaml:11 spec.engine.args.d: invalid YAML: aliases expand past 1000 alias uses or 100000 values"
        " here (an alias bomb?); nest fewer anchors",
    ],
    "load_profile_arrivals.yaml": [
        "load_profile_arrivals.yaml:6 spec.arrival.std: required with process 'normal'",
        "load_profile_arrivals.yaml:9 spec.arrival.end_rate: only used with process 'ramp' (process is 'normal') (got 9)",
        "load_profile_arrivals.yaml:17 spec.arrival.end_rate: rate and end_rate are both 0: nothing would be sent (got 0)",
        "load_profile_arrivals.yaml:27 spec.arrival.rate: only used with process 'poisson', 'gamma', 'constant',"
        " 'normal' or 'ramp' (process is 'steps') (got 2)",
        # a list item is located at its own line
        "load_profile_arrivals.yaml:30 spec.arrival.steps[1].rat: unknown field; expected one of: duration, rate;"
        " did you mean 'rate'?",
        "load_profile_arrivals.yaml:30 spec.arrival.steps[1].rate: required field missing",
        "load_profile_arrivals.yaml:41 spec.duration: shorter than arrival.steps, which last 70s: the steps past 60s"
        " would never run (got '60s')",
        "load_profile_arrivals.yaml:48 spec.arrival.rate: only used with process 'poisson', 'gamma', 'constant',"
        " 'normal' or 'ramp' (process is 'trace') (got 3)",
        "load_profile_arrivals.yaml:48 spec.arrival.time_scale: must be > 0 (got 0)",
        "load_profile_arrivals.yaml:48 spec.arrival.trace_format: must be one of: auto, enova, azure, burstgpt"
        " (got 'azur'); did you mean 'azure'?",
        "load_profile_arrivals.yaml:56 spec.arrival.rate: must be > 0 (got 0)",
        "load_profile_arrivals.yaml:58 spec.concurrency: must be > 0 (got 0)",
    ],
    "load_profile_requests.yaml": [
        "load_profile_requests.yaml:8 spec.requests.input_tokens: required with prompts 'synthetic'",
        "load_profile_requests.yaml:9 spec.requests.api: must be one of: completions, chat, generate (got 'openai')",
        "load_profile_requests.yaml:11 spec.requests.output_tokens.max: must be >= min (64) (got 32)",
        "load_profile_requests.yaml:22 spec.requests.input_tokens: only used with prompts 'synthetic'"
        " (prompts is 'builtin'); a prompt set has its own lengths",
        "load_profile_requests.yaml:23 spec.requests.output_tokens.value: required with distribution 'fixed'",
        "load_profile_requests.yaml:25 spec.requests.output_tokens.mean: only used with distribution 'normal' or"
        " 'lognormal' (distribution is 'fixed') (got 32)",
        "load_profile_requests.yaml:26 spec.requests.top_p: must be <= 1 (got 1.5)",
        "load_profile_requests.yaml:36 spec.requests.prompts: must be builtin, synthetic, or a prompt file: .jsonl,"
        " or ShareGPT-format .json (got 'prompts.txt')",
        "load_profile_requests.yaml:37 spec.requests.output_tokens.std: required with distribution 'lognormal'",
        "load_profile_requests.yaml:37 spec.requests.output_tokens.stdev: unknown field; expected one of:"
        " distribution, max, mean, min, std, value; did you mean 'std'?",
    ],
    "scaling_rules.yaml": [
        "scaling_rules.yaml:6 spec.scaling.target: required with policy 'concurrency', such as target: {concurrency: 8}",
        "scaling_rules.yaml:8 spec.scaling.max: must be >= min (3) (got 2)",
        # min 0 without scale_to_zero_after: no line of its own, so the line of its mapping
        "scaling_rules.yaml:16 spec.scaling.scale_to_zero_after: required with min 0: the idle time after which the"
        " count may go to 0, such as 10m (or set min >= 1)",
        "scaling_rules.yaml:20 spec.scaling.target: policy 'rps' needs target.rps, such as target: {rps: 4}",
        "scaling_rules.yaml:29 spec.scaling.target: only used with policy 'concurrency' or 'rps' (policy is 'slo');"
        " slo takes no target",
        "scaling_rules.yaml:30 spec.scaling.scale_down_delay: must be >= 0 (got -5)",
        "scaling_rules.yaml:31 spec.scaling.scale_to_zero_after: only used with min 0 (min is 1) (got '10m')",
        "scaling_rules.yaml:38 spec.scaling.max: must be >= 1 (got 0)",
        "scaling_rules.yaml:38 spec.scaling.scale_down_delay: must be a duration such as 500ms, 60s, 5m or 1h30m,"
        " or a number of seconds (got '1x')",
        "scaling_rules.yaml:45 spec.scaling.polcy: unknown field; expected one of: max, min, policy, scale_down_delay,"
        " scale_to_zero_after, scale_up_delay, target; did you mean 'policy'?",
        "scaling_rules.yaml:52 spec.scaling: policy 'slo' (the default) needs the deployment's slo: name an SLO"
        " document in spec.slo, or choose policy concurrency or rps",
    ],
    "multiple_errors": [
        "multiple_errors/app.yaml:7 spec.replicas: must be >= 0 (got -2)",
        'multiple_errors/app.yaml:16 spec.slo: no SLO named "fast" (no SLO is defined)',
        "multiple_errors/broken.yml:4: invalid YAML: expected ',' or '}', but got '<stream end>'"
        " (while parsing a flow mapping at line 3)",
        "multiple_errors/nested/load.yaml:7 spec.arrival.rate: must be > 0 (got 0)",
        'multiple_errors/nested/load.yaml:18 spec.slo: no SLO named "chat" (no SLO is defined)',
    ],
}


def test_every_case_on_disk_is_in_the_table():
    assert sorted(p.name for p in CASES.iterdir()) == sorted(TABLE)


@pytest.mark.parametrize("case", sorted(TABLE))
def test_a_bad_spec_is_reported_with_file_line_field_and_message(case, monkeypatch):
    monkeypatch.chdir(CASES)
    with pytest.raises(SpecError) as caught:
        load_specs(Path(case))
    assert [str(issue) for issue in caught.value.issues] == TABLE[case]


def test_the_error_message_counts_the_issues_and_lists_each_on_its_own_line(monkeypatch):
    monkeypatch.chdir(CASES)
    with pytest.raises(SpecError) as caught:
        load_specs(Path("multiple_errors"))
    lines = str(caught.value).splitlines()
    assert lines[0] == "5 errors in the specs:"
    assert lines[1:] == TABLE["multiple_errors"]


def test_files_outside_the_working_directory_are_named_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(CASES / "negative_replicas.yaml")
    assert [str(i) for i in caught.value.issues] == [f"{CASES}/negative_replicas.yaml:7 spec.replicas: must be >= 0 (got -1)"]


def test_a_missing_path_is_one_issue_without_a_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(Path("specs"))
    assert [str(i) for i in caught.value.issues] == ["specs: no such file or directory"]


def test_a_directory_without_spec_files_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "README.md").write_text("not a spec\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(Path("specs"))
    assert [str(i) for i in caught.value.issues] == ["specs: no spec files (*.yaml, *.yml) in this directory"]


def test_a_file_that_is_not_utf8_is_reported(tmp_path, monkeypatch):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(Path("latin1.yaml"))
    [issue] = caught.value.issues
    assert (issue.file, issue.line) == ("latin1.yaml", 0)
    assert issue.message.startswith("cannot read: 'utf-8' codec can't decode")


def test_a_reference_to_a_document_that_failed_validation_is_not_reported_again(tmp_path, monkeypatch):
    (tmp_path / "specs.yaml").write_text(
        "apiVersion: enova/v1\nkind: SLO\nmetadata: {name: chat}\nspec: {ttft_p95_ms: -5}\n"
        "---\n"
        "apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {model: org/model, slo: chat}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(Path("specs.yaml"))
    assert [str(i) for i in caught.value.issues] == ["specs.yaml:4 spec.ttft_p95_ms: must be > 0 (got -5)"]


def test_a_yaml_tag_the_safe_loader_does_not_know_is_reported_and_other_documents_still_load(tmp_path, monkeypatch):
    (tmp_path / "specs.yaml").write_text(
        "apiVersion: enova/v1\nkind: SLO\nmetadata: {name: chat}\nspec: {ttft_p95_ms: !!python/name:os.system 1}\n"
        "---\n"
        "apiVersion: enova/v1\nkind: SLO\nmetadata: {name: chat}\nspec: {ttft_p95_ms: 5}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(Path("specs.yaml"))
    assert [str(i) for i in caught.value.issues] == [
        "specs.yaml:4: invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"
    ]
