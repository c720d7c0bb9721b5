"""Reading traces: the enova layout, the public Azure LLM inference and BurstGPT layouts as they are
published, CSV or JSONL; every bad row named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enova.errors import UsageError
from enova.inject.model import Arrival
from enova.inject.traces import read_trace

# The first rows of AzureLLMInferenceTrace_conv.csv (2023) have this shape: 7 fractional digits.
AZURE_2023 = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2737730,879,21
"""
# The 2024 week-long traces carry a zone, and some rows no fraction.
AZURE_2024 = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,2162,5
2024-05-10 00:00:01+00:00,1201,62
2024-05-10 00:00:01.500000+00:00,36,0
"""
BURSTGPT = """\
Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
110.5,GPT-4,417,505,922,API log
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_enova_csv_is_replayed_as_written_with_its_token_counts(tmp_path):
    path = write(tmp_path, "t.csv", "timestamp,input_tokens,output_tokens\n0.5,100,20\n1.25,,30\n3,80,\n")
    assert read_trace(path) == [Arrival(0, 0.5, 100, 20), Arrival(1, 1.25, None, 30), Arrival(2, 3.0, 80, None)]


def test_an_enova_trace_needs_only_its_timestamps(tmp_path):
    path = write(tmp_path, "t.csv", "timestamp\n0\n2\n")
    assert read_trace(path) == [Arrival(0, 0.0), Arrival(1, 2.0)]


def test_an_enova_jsonl_trace_is_read_by_its_keys(tmp_path):
    lines = [{"timestamp": 0.0, "input_tokens": 12, "output_tokens": 4}, {"timestamp": 0.5}, {"timestamp": 1, "note": "x"}]
    path = write(tmp_path, "t.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert read_trace(path) == [Arrival(0, 0.0, 12, 4), Arrival(1, 0.5), Arrival(2, 1.0)]


def test_the_azure_2023_layout_is_read_as_offsets_from_the_first_request(tmp_path):
    arrivals = read_trace(write(tmp_path, "AzureLLMInferenceTrace_conv.csv", AZURE_2023))
    assert [a.at for a in arrivals] == pytest.approx([0.0, 4.314579, 4.593183], abs=1e-6)
    assert [(a.input_tokens, a.output_tokens) for a in arrivals] == [(374, 44), (396, 109), (879, 21)]


def test_the_azure_2024_layout_with_zones_and_whole_seconds_is_read_too(tmp_path):
    arrivals = read_trace(write(tmp_path, "AzureLLMInferenceTrace_conv_1week.csv", AZURE_2024), "azure")
    assert [a.at for a in arrivals] == pytest.approx([0.0, 0.99007, 1.49007], abs=1e-6)
    assert arrivals[2].output_tokens is None  # 0 generated tokens: unknown, a request cannot ask for 0


def test_the_burstgpt_layout_is_read_as_offsets_and_a_failed_request_keeps_its_arrival(tmp_path):
    arrivals = read_trace(write(tmp_path, "BurstGPT_1.csv", BURSTGPT))
    assert arrivals == [Arrival(0, 0.0, 472, 18), Arrival(1, 40.0, 1087, None), Arrival(2, 105.5, 417, 505)]


def test_a_time_scale_of_two_replays_twice_as_fast(tmp_path):
    arrivals = read_trace(write(tmp_path, "BurstGPT_1.csv", BURSTGPT), "burstgpt", time_scale=2.0)
    assert [a.at for a in arrivals] == [0.0, 20.0, 52.75]


def test_rows_out_of_order_are_sorted_and_renumbered(tmp_path):
    path = write(tmp_path, "t.csv", "timestamp,output_tokens\n3,1\n1,2\n2,3\n1,4\n")
    assert read_trace(path) == [Arrival(0, 1.0, None, 2), Arrival(1, 1.0, None, 4), Arrival(2, 2.0, None, 3),
                                Arrival(3, 3.0, None, 1)]


@pytest.mark.parametrize("name, text, message", [
    ("t.csv", "timestamp,input_tokens\n0,10\n1,ten\n", "t.csv:3: input_tokens must be a whole number of tokens (got 'ten')"),
    ("t.csv", "timestamp\n0\n\n-1\n", "t.csv:4: timestamp must be >= 0 seconds from the start (got -1)"),
    ("t.csv", "timestamp\n0\nsoon\n", "t.csv:3: timestamp must be a number of seconds (got 'soon')"),
    ("t.csv", "timestamp\n0\nnan\n", "t.csv:3: timestamp must be a finite number of seconds (got 'nan')"),
    ("t.csv", "timestamp,output_tokens\n0,2.5\n", "t.csv:2: output_tokens must be a whole number of tokens >= 0 (got '2.5')"),
    ("t.csv", "timestamp,output_tokens\n0,-3\n", "t.csv:2: output_tokens must be a whole number of tokens >= 0 (got '-3')"),
    ("t.csv", "timestamp,output_tokens\n0,1\n1,2,3\n", "t.csv:3: 3 columns where the header has 2"),
    ("azure.csv", AZURE_2023.replace("2023-11-16 18:15:50.9951690", "16/11/2023 18:15"),
     "azure.csv:3: TIMESTAMP must be a date-time such as 2023-11-16 18:15:46.6805900 (got '16/11/2023 18:15')"),
    ("t.jsonl", '{"timestamp": 0}\n{"timestamp": 1,}\n', "t.jsonl:2: not valid JSON: Expecting property name enclosed in double quotes"),
    ("t.jsonl", '{"timestamp": 0}\n[1]\n', "t.jsonl:2: each line must be a JSON object (got list)"),
    ("t.jsonl", '{"timestamp": 0}\n{"time": 1}\n', "t.jsonl:2: timestamp must be a number of seconds (got None)"),
    ("t.jsonl", '{"timestamp": 0}\n{"timestamp": true}\n', "t.jsonl:2: timestamp must be a number of seconds (got True)"),
])
def test_a_bad_row_is_named_by_file_line_and_column(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, name, text)
    with pytest.raises(UsageError) as caught:
        read_trace(Path(name))
    assert str(caught.value) == message


def test_an_impossible_date_is_named_by_file_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "azure.csv", AZURE_2023.replace("18:15:50", "25:15:50"))
    with pytest.raises(UsageError) as caught:
        read_trace(Path("azure.csv"))
    message = str(caught.value)  # the middle is Python's own words
    assert message.startswith("azure.csv:3: TIMESTAMP is not a valid date-time: ")
    assert message.endswith(" (got '2023-11-16 25:15:50.9951690')")


def test_an_unknown_layout_names_the_columns_it_found_and_the_ones_it_knows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "t.csv", "time,tokens\n0,1\n")
    with pytest.raises(UsageError) as caught:
        read_trace(Path("t.csv"))
    assert str(caught.value).startswith("t.csv:1: unknown trace layout (columns: time, tokens); expected a header with"
                                        " timestamp[,input_tokens,output_tokens] (enova), TIMESTAMP,ContextTokens,")


def test_a_format_named_explicitly_must_match_the_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "t.csv", "timestamp,input_tokens\n0,1\n")
    with pytest.raises(UsageError) as caught:
        read_trace(Path("t.csv"), "azure")
    assert str(caught.value) == ("t.csv:1: the azure layout needs column TIMESTAMP, ContextTokens, GeneratedTokens"
                                 " (columns: timestamp, input_tokens)")


@pytest.mark.parametrize("text, message", [
    ("", "t.csv: the trace is empty"),
    ("\n\n", "t.csv: the trace is empty"),
    ("timestamp,input_tokens\n", "t.csv: the trace has a header but no requests"),
])
def test_an_empty_trace_is_an_error(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "t.csv", text)
    with pytest.raises(UsageError) as caught:
        read_trace(Path("t.csv"))
    assert str(caught.value) == message


def test_a_missing_trace_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        read_trace(Path("traces/nope.csv"))
    assert str(caught.value) == "traces/nope.csv: no such trace file"


def test_a_trace_outside_the_working_directory_is_named_by_its_path(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    path = write(tmp_path, "t.csv", "timestamp\nlater\n")
    with pytest.raises(UsageError) as caught:
        read_trace(path)
    assert str(caught.value) == f"{path}:2: timestamp must be a number of seconds (got 'later')"


def test_a_bom_and_crlf_line_ends_are_read(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp,output_tokens\r\n0,5\r\n1,6\r\n")
    assert read_trace(path) == [Arrival(0, 0.0, None, 5), Arrival(1, 1.0, None, 6)]
