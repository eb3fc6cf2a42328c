"""One-line summaries of nodes by a local model, incremental by code hash (`pt summarize`).

    s = Summarizer.load("gemma3-270m-q4_k_m")        # registry model, RAM-checked (adapters/models.py)
    report = summarize_changed(pt, s, paths=["src/"], budget_s=600, progress=print_progress)

Which nodes need a summary (`summaries.plan`), what the model is shown (`summaries.texts`) and how
the rows are kept (`summaries.put`: keyed by node, code hash and model) are rules; this module asks
the model and cleans its answer. Decoding is greedy with a fixed seed and the model's state is
reset before every node, so a summary is a function of the model and the node's text alone.

The answer is cut to its first line and MAX_CHARS; one that is empty, or looks like code, a
repetition or a refusal rather than a sentence, is stored with status 'empty' / 'garbage' and no
summary text: remembered (unchanged code is not asked again) but never shown or searched.
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Callable

from ..adapters import models as M

CODE_CHARS = 1200  # ~350 tokens: the head of a long body says what it does, and the prompt is
# most of the cost (Gemma 3 270M: ~1 s a node on 2 cores)
MAX_CHARS = 160  # one line in a context pack
MAX_TOKENS = 40
N_CTX = 1024
# The packaged Gemma 3 270M is a base model: it continues text rather than following instructions,
# and with few-shot examples it copies them. Of the prompts tried, naming the item and letting the
# model finish the sentence ("`levenshtein` is a function that ...") gave the most usable lines.
PROMPT = "Here is a Rust {kind}:\n\n```rust\n{code}\n```\n\nIn one sentence, the {kind} `{name}`"

_BOILER = re.compile(r"^(?:is|are) (?:a|an|the) (?:\w+ ){0,3}?(?:function|method|struct|structure|enum|"
                     r"enumeration|trait|type|constant|static|macro|alias)s? (?:that|which) ", re.I)
_DANGLING = {"a", "an", "the", "of", "to", "in", "and", "or", "with", "for", "that", "is", "by", "from", "as"}
_STUTTER = re.compile(r"\b(\w+)\b(?:\W+\1\b){3,}", re.I)
_WORD = re.compile(r"[A-Za-z]+")
_CODEISH = re.compile(r"^(?:pub\b|fn\b|impl\b|struct\b|enum\b|let\b|use\b|#\[|//|```|\{|\})")


@dataclass
class Answer:
    summary: str  # '' unless status == 'ok'
    status: str  # ok | empty | garbage
    raw: str  # the model's first line, cleaned and bounded (kept for inspection)


def prompt_for(row: dict) -> str:
    code = (row.get("code") or row.get("signature") or "")[:CODE_CHARS]
    return PROMPT.format(kind=_KIND.get(row.get("kind", ""), row.get("kind") or "item"),
                         name=row.get("item_path") or row.get("name", ""), code=code)


_KIND = {"fn": "function", "macro_rules": "macro", "type": "type alias", "const": "constant"}


def clean(text: str) -> Answer:
    """The model's continuation as one bounded sentence, and whether it is a usable summary."""
    line = next((ln for ln in (text or "").splitlines() if ln.strip()), "")
    line = re.sub(r"</?code>|\*\*", "", line)
    line = re.sub(r"\s+", " ", line).strip().strip('"').strip()
    line = _BOILER.sub("", line)  # "is a function that returns x" -> "returns x": the kind is known
    whole = [w.lower() for w in _WORD.findall(line)]
    looping = (len(whole) >= 8 and len(set(whole)) < 0.5 * len(whole)  # "is a simple version of x. is a ..."
               or _STUTTER.search(line) is not None)  # "rust-lang-lang-lang-lang"
    m = re.search(r"(?<=[a-z0-9)`])\. ", line)  # the first sentence (not "e.g. " inside a word run)
    if m:
        line = line[:m.start() + 1]
    if len(line) > MAX_CHARS:
        cut = line[:MAX_CHARS]
        line = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(",;:") + "..."
    if not line:
        return Answer("", "empty", "")
    words = [w.lower() for w in _WORD.findall(line)]
    letters = sum(len(w) for w in words)
    garbage = (len(words) < 3  # a name or a fragment, not a sentence
               or words[-1] in _DANGLING  # cut off by the token limit: "is the number of classes in the"
               or _CODEISH.match(line) is not None  # the code echoed back
               or letters < 0.6 * len(line.replace(" ", ""))  # mostly symbols
               or looping or len(set(words)) < 0.5 * len(words))  # a loop, in the line or the sentence
    return Answer("" if garbage else line, "garbage" if garbage else "ok", line)


class Summarizer:
    """A loaded model that writes one line about a node."""

    def __init__(self, llm, model_id: str):
        self.llm, self.model_id = llm, model_id

    @classmethod
    def load(cls, name: str = M.DEFAULT_MODEL) -> "Summarizer":
        rec = M.get(name)
        return cls(M.load_llama(rec, n_ctx=N_CTX), rec.model_id)

    def ask(self, row: dict) -> str:
        return M.complete(self.llm, prompt_for(row), max_tokens=MAX_TOKENS, stop=["\n"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()


def summarize_changed(pt, summarizer, paths: list[str] | None = None, budget_s: float | None = None,
                      batch: int = 8, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Summaries for every planned node (no row yet for its current code and this model), written
    `batch` at a time, until done or `budget_s` seconds have passed; then the model's rows of
    removed nodes and changed code are pruned. `summarizer` has `.model_id` and `.ask(row) -> text`
    (or `.ask_batch(rows) -> texts`).
    `progress(done, total, elapsed_s)` is called after every batch.
    Returns {"model", "planned", "summarized", "by_status", "left", "seconds", "nodes_per_s"}."""
    t0 = time.perf_counter()
    plan = pt.query("summaries.plan", model=summarizer.model_id, paths=list(paths or []))
    done, by_status = 0, {"ok": 0, "empty": 0, "garbage": 0}

    def over() -> bool:  # checked before every node: a node costs ~1 s, a batch several
        return budget_s is not None and time.perf_counter() - t0 >= budget_s

    for i in range(0, len(plan), batch):
        if over():
            break
        rows = pt.query("summaries.texts", ids=[r["id"] for r in plan[i:i + batch]])
        out = []
        for r, text, ms in _answers(summarizer, rows, over):
            ans = clean(text)
            out.append([r["id"], r["hash"], ans.summary, ans.status, ans.raw, ms])
            by_status[ans.status] += 1
        pt.run("summaries.put", {"model": summarizer.model_id, "rows": out})
        # nodes without code (texts skips them) count as done; a cut batch counts what it asked
        done += len(plan[i:i + batch]) if len(out) == len(rows) else len(out)
        if progress:
            progress(done, len(plan), time.perf_counter() - t0)
        if len(out) < len(rows):
            break
    pt.run("summaries.put", {"model": summarizer.model_id, "rows": [], "prune": True})
    secs = time.perf_counter() - t0
    n = sum(by_status.values())
    return {"model": summarizer.model_id, "planned": len(plan), "summarized": n, "by_status": by_status,
            "left": len(plan) - done, "seconds": round(secs, 2), "nodes_per_s": round(n / secs, 3) if secs else 0.0}


def _answers(summarizer, rows: list[dict], over: Callable[[], bool]):
    """(row, raw answer, ms) for each row until `over()`. A summarizer with `ask_batch` (Dobby's,
    which spreads a batch over its model workers) answers the whole batch; each row gets its share
    of the batch's time."""
    if hasattr(summarizer, "ask_batch"):
        t = time.perf_counter()
        texts = summarizer.ask_batch(rows) if rows else []
        ms = int((time.perf_counter() - t) * 1000 / max(1, len(rows)))
        yield from ((r, text, ms) for r, text in zip(rows, texts))
        return
    for r in rows:
        if over():
            return
        t = time.perf_counter()
        text = summarizer.ask(r)
        yield r, text, int((time.perf_counter() - t) * 1000)


def eta_line(done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate else 0.0
    return (f"pt summarize: {done}/{total} nodes, {rate:.2f} nodes/s, "
            f"ETA {int(left // 60)}m{int(left % 60):02d}s")
