"""Tolerant, fast extraction of Rust items and raw edge facts with tree-sitter.

``extract(rel_path, data) -> FileFacts`` parses one file and returns plain lists
of tuples (cheap to pickle between processes). Column orders are fixed:

nodes      (id, file_path, kind, name, item_path, parent_id, isgl_level, signature,
            visibility, generics, where_clause, cfg, features, is_test, doc,
            span_start, span_end, line_start, line_end, parse_error_count, hash,
            recovered)
code       (id, code_slice_text)                      -- every node but the file node
calls      (caller_id, callee_path, callee_name, receiver, call_kind,
            span_start, span_end, line, in_macro)
uses       (scope_id, use_id, path, name, alias, is_glob, visibility)
type_refs  (item_id, type_path, type_name, span_start)
impls      (impl_id, trait_path, trait_name, self_path, self_name)
bounds     (item_id, param, trait_path, trait_name)
mods       (mod_id, name, inline, path_attr)
parse_error_count: int, error_spans: [(start_byte, end_byte)] (MISSING: start == end)

Kinds: file, fn, struct, enum, variant, union, trait, impl, mod, const, static,
type (aliases and associated types), macro_rules, macro_call (a macro invoked
directly in a file, module, impl, trait or extern block), extern_block, use
(also ``extern crate``). Items inside fn bodies are items too.

Ids: ``{kind}:{rel_path}::{item_path}``; the file node is ``file:{rel_path}``.
``item_path`` joins the segments of the enclosing items and the item with
``::``. A segment is the item name, except ``<impl Trait for Type>`` /
``<impl Type>`` (header text, whitespace collapsed, no where clause),
``<use a::{b, c}>`` (use tree, whitespace collapsed), ``<extern crate x>`` and
``<extern "C">`` (extern blocks); for those the segment is also the ``name``.
When two items would get the same id, the later ones in source order get
``~2``, ``~3``... on their own segment, which their children inherit. No line
numbers: ids survive insertions above.

Nodes: spans are byte offsets and include leading attributes and doc
comments; lines are 1-based. ``isgl_level`` is 1 for items directly in a file
or an inline module (ISGL1), parent + 1 below (methods, variants, nested fns). ``signature`` is the header up to the body
(``{``, or ``= value`` of const/static) with whitespace collapsed. ``cfg`` lists
``#[cfg(P)]`` as ``P`` and ``#[cfg_attr(P, ..)]`` as ``cfg_attr:P``;
``features`` are the ``feature = "x"`` names in either. ``is_test``: ``#[test]``,
``#[x::test]``, ``#[bench]``, ``#[cfg(test)]``/``#[cfg(all(test, ..))]``,
inherited by nested items; a file in a ``tests/`` folder (or ``tests.rs``) or
with ``#![cfg(test)]`` is a test file. ``hash`` is blake3 of the span's bytes.

Calls (rows in no particular order): ``call_kind`` is ``plain`` (``foo()``),
``path`` (``a::b()``, ``Self::new()``; turbofish removed), ``method``
(``x.foo()``; ``receiver`` is the receiver text, whitespace collapsed, at most
80 chars), ``macro`` (``name!(..)``) or ``expr`` (another expression is called,
e.g. ``(self.f)()``; callee_name ''). The span is the callee (the method name
for methods, the macro path for macros), where a go-to-definition request
should point. Calls inside macro token trees are found by scanning the tokens
(``in_macro=True``). ``caller_id`` is the innermost item around the call (for
a call inside an item-level macro, that macro_call node).

Type refs: ``type_identifier`` / scoped types anywhere in an item (signature,
fields, impl header, body), minus definitions, generic parameters, ``Self``.
Bounds: ``param`` is the generic parameter or the where-clause left side,
``Self`` for supertraits, the associated type's name for its bounds, and
``impl:{arg}`` for ``impl Trait`` arguments. Lifetimes are skipped.

Broken code: an item containing errors ends where its braces match in the
text (rustc matches delimiters before parsing) if tree-sitter made it longer.
Items that tree-sitter left as loose tokens in an ERROR region are rebuilt
from the text (keyword at a line start, name, bracket matching) with
``recovered=True``; recovered impls get an ``impls`` row from the header text,
recovered ``use`` items get no ``uses`` rows. Any valid UTF-8 input without NUL
bytes yields a result; non-UTF-8 raises NotUtf8Error, NUL bytes BinaryFileError.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import blake3
import tree_sitter
import tree_sitter_rust

__all__ = ["extract", "extract_region", "FileFacts", "NotUtf8Error", "BinaryFileError"]

_LANGUAGE = tree_sitter.Language(tree_sitter_rust.language())
_PARSER = tree_sitter.Parser(_LANGUAGE)
_RANGE_PARSER = tree_sitter.Parser(_LANGUAGE)  # parses only given byte ranges (extract_region)

# One query over the whole tree: the C side does the traversal and Python only
# touches the captured nodes (a Python walk over every node would cost about
# as much as the parse). Patterns are plain node kinds: field or parent
# constraints make the query engine measurably slower than the Python checks
# that replace them.
_QUERY = tree_sitter.Query(_LANGUAGE, """
[(function_item) (function_signature_item) (struct_item) (enum_item) (enum_variant)
 (union_item) (trait_item) (impl_item) (mod_item) (const_item) (static_item)
 (type_item) (associated_type) (macro_definition) (foreign_mod_item)
 (use_declaration) (extern_crate_declaration)] @item
(macro_invocation) @mac
(call_expression) @call
(type_identifier) @ty
(scoped_type_identifier) @sty
(abstract_type) @abs
(attribute_item) @attr
(inner_attribute_item) @inner
[(line_comment) (block_comment)] @comment
""")

_F = _LANGUAGE.field_id_for_name
_F_NAME, _F_BODY, _F_TPARAMS, _F_VALUE = _F("name"), _F("body"), _F("type_parameters"), _F("value")
_F_TYPE, _F_TRAIT, _F_FIELD, _F_FUNCTION = _F("type"), _F("trait"), _F("field"), _F("function")
_F_MACRO, _F_BOUNDS, _F_LEFT, _F_PATH = _F("macro"), _F("bounds"), _F("left"), _F("path")
_F_ALIAS, _F_LIST, _F_ARGUMENT, _F_PATTERN = _F("alias"), _F("list"), _F("argument"), _F("pattern")

_KIND = {
    "function_item": "fn", "function_signature_item": "fn", "struct_item": "struct",
    "enum_item": "enum", "enum_variant": "variant", "union_item": "union",
    "trait_item": "trait", "impl_item": "impl", "mod_item": "mod",
    "const_item": "const", "static_item": "static", "type_item": "type",
    "associated_type": "type", "macro_definition": "macro_rules",
    "foreign_mod_item": "extern_block", "use_declaration": "use",
    "extern_crate_declaration": "use", "macro_invocation": "macro_call",
}
# Kinds whose generic parameters / where clauses are read.
_GENERIC_KINDS = frozenset(("fn", "struct", "enum", "union", "trait", "impl", "type"))
# Items whose bodies hold items: a macro invocation directly inside is an item.
_MACRO_HOSTS = frozenset(("mod", "impl", "trait", "extern_block"))
# Kinds whose name is a type_identifier that defines (not mentions) a type.
_TYPE_NAMED = frozenset(("struct", "enum", "union", "trait", "type"))
_KIND_BY_ID = {_LANGUAGE.id_for_node_kind(k, True): v for k, v in _KIND.items()}
_VIS_BYTES_RE = re.compile(rb"pub(?![A-Za-z0-9_])(?:[ \t]*\([^)]*\))?")
_TUPLE_FIELDS_KIND = _LANGUAGE.id_for_node_kind("ordered_field_declaration_list", True)
# Kinds whose extent is not a `{..}` body or a `;`-terminated header.
_NO_EXTENT_FIX = frozenset(("variant", "macro_call"))
# Recovery: an item keyword at the start of a line (after visibility and
# qualifiers), and a scanner over brackets, `;`, `=` that skips literals/comments.
_ITEM_START_RE = re.compile(
    rb"^(?:\xef\xbb\xbf)?[ \t]*(?P<item>(?:pub(?:[ \t]*\([^)\n]*\))?\s+)?"
    rb"(?:(?:unsafe|async|const|default|extern(?:[ \t]+\"[^\"\n]*\")?)\s+)*"
    rb"(?P<kw>fn|struct|enum|union|trait|impl|mod|const|static|type|use|macro_rules!))"
    rb"(?![A-Za-z0-9_])", re.M)
_NAME_RE = re.compile(rb"\s*(?:mut\s+)?(?:r#)?([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)")
_SCAN_RE = re.compile(rb'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/'
                      rb"|'(?:[^'\\\n]|\\[^'\n]{1,10})'|[{}()\[\];=]", re.S)
_WHERE_RE = re.compile(r"\swhere\b")
_RECOVER_KIND = {b"fn": "fn", b"struct": "struct", b"enum": "enum", b"union": "union",
                 b"trait": "trait", b"impl": "impl", b"mod": "mod", b"const": "const",
                 b"static": "static", b"type": "type", b"use": "use",
                 b"macro_rules!": "macro_rules"}
# Literals and comments, unterminated ones included: no item starts inside them.
_DEAD_RE = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\Z)|//[^\n]*|/\*(?:.*?\*/|.*)'
                      rb"|'(?:[^'\\\n]|\\[^'\n]{1,10})'", re.S)

_FEATURE_RE = re.compile(r'feature\s*=\s*"([^"]*)"')
_SPACE_PUNCT_RE = re.compile(r"\s*([^\w\s])\s*")
_VIS_RE = re.compile(r"pub(\s*\([^)]*\))?")
# Outer doc comments in the region before an item: `/// text` lines, `/** */`.
_DOC_RE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t]*///(?!/) ?([^\n]*)|/\*\*(?![*/]).*?\*/",
                     re.M | re.S)
_DOC_LINE_RE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t]*///(?!/) ?([^\n\r]*)", re.M)
# Attribute names worth parsing (anything else is skipped unless it says `test`).
_ATTR_HEADS = (b"cfg", b"doc", b"path", b"bench")

# Token scan of macro token trees: every `(` and `!` outside string/char
# literals and comments (the literal alternatives consume those first).
_TT_RE = re.compile(rb'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/'
                    rb"|'(?:[^'\\\n]|\\[^'\n]{1,10})'|[(!]", re.S)
_NOT_CALLEES = frozenset((
    "if", "while", "match", "return", "in", "for", "loop", "fn", "let", "as", "mut",
    "ref", "move", "else", "unsafe", "async", "await", "impl", "dyn", "where",
    "break", "continue", "yield", "box", "static", "const", "struct", "enum", "type",
    "use", "mod", "trait", "pub", "self", "super", "crate", "extern", "union"))
_IDENT_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
                         + bytes(range(0x80, 0x100)))
_RECV_CHARS = _IDENT_CHARS | frozenset(b".:?!")


class NotUtf8Error(ValueError):
    """The file is not valid UTF-8."""

    def __init__(self, rel_path: str):
        super().__init__(f"{rel_path}: not valid UTF-8")
        self.rel_path = rel_path


class BinaryFileError(ValueError):
    """The file contains NUL bytes (binary data, not Rust source)."""

    def __init__(self, rel_path: str):
        super().__init__(f"{rel_path}: binary file (NUL bytes)")
        self.rel_path = rel_path


@dataclass
class FileFacts:
    """All facts of one file; see the module docstring for the tuple columns."""
    nodes: list = field(default_factory=list)
    code: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    uses: list = field(default_factory=list)
    type_refs: list = field(default_factory=list)
    impls: list = field(default_factory=list)
    bounds: list = field(default_factory=list)
    mods: list = field(default_factory=list)
    parse_error_count: int = 0
    error_spans: list = field(default_factory=list)


def _check_text(rel_path: str, data: bytes) -> None:
    if b"\x00" in data:
        raise BinaryFileError(rel_path)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUtf8Error(rel_path) from None


def extract(rel_path: str, data: bytes) -> FileFacts:
    """Parse one Rust file and return its items and raw edge facts."""
    _check_text(rel_path, data)
    tree = _PARSER.parse(data)
    return _FileExtractor(rel_path, data, tree.root_node).run()


def extract_region(rel_path: str, data: bytes, ranges: list[tuple[int, int]],
                   seen: dict[str, int], next_start: int | None) -> FileFacts | None:
    """The facts of the items inside `ranges` (sorted, disjoint byte ranges of `data`: the edited
    region of a file, and the text between its other top-level items that is not whitespace),
    and the file node - as `extract` of the whole file would give them, positions included:
    the parser reads only those ranges, so the items outside them cost nothing. `seen` counts
    the ids of the top-level items before the region (their `~n` duplicates); `next_start` is
    where the first top-level item after the region starts. None when the result could differ
    from a whole-file extraction: a syntax error, or an attribute or doc comment of the region
    that would belong to the item at `next_start`. Bytes `extract` refuses raise its errors."""
    _check_text(rel_path, data)
    points, row, at = [], 0, 0
    for s, e in ranges:
        row += data.count(b"\n", at, s)
        ps = (row, s - data.rfind(b"\n", 0, s) - 1)
        row += data.count(b"\n", s, e)
        points.append(tree_sitter.Range(ps, (row, e - data.rfind(b"\n", 0, e) - 1), s, e))
        at = e
    _RANGE_PARSER.included_ranges = points
    tree = _RANGE_PARSER.parse(data)
    if tree.root_node.has_error:
        return None
    ex = _FileExtractor(rel_path, data, tree.root_node)
    ex.seen_ids = dict(seen)
    facts = ex.run()
    if next_start is not None and ex._leading(next_start)[0] != next_start:
        return None
    return facts


class _Item:
    """One item while its file is processed (turned into a `nodes` row)."""

    __slots__ = ("node", "kind", "start", "end", "attrs", "docs", "recovered",
                 "name", "seg", "parent", "level", "id", "item_path", "is_test",
                 "params", "inner", "header")

    def __init__(self, node, kind, start, end, attrs, docs, recovered=False):
        self.node = node
        self.kind = kind
        self.start = start          # includes leading attributes / doc comments
        self.end = end
        self.attrs = attrs          # [(start, end)] of leading attributes, or None
        self.docs = docs            # (start, end) of the outer doc comments, or None
        self.recovered = recovered  # rebuilt from an ERROR region
        self.params = None          # names of generic type parameters
        self.inner = None           # `#![..]` / `//!` nodes directly inside the item
        self.header = None          # recovered items: (header start, header end)
        # set later: parent, level (_nest_items); name, seg (details);
        # id, item_path, is_test (_emit_item)


class _FileExtractor:
    def __init__(self, rel_path: str, data: bytes, root):
        self.rel = rel_path
        self.data = data
        self.root = root
        self.facts = FileFacts()
        self.items: list[_Item] = []
        self.seen_ids: dict[str, int] = {}
        self.err_nodes: list = []
        self.err_starts: list[int] = []
        self.err_ends: list[int] = []
        self.missing: list[int] = []
        self.missing_owner: list[tuple] = []
        self.file_inner: list = []
        self.line_at = (0, 1)  # (byte, its line) of the last emitted item
        self.type_skip: set[int] = set()  # type_identifiers that name, not mention
        self.file_test = False
        self.has_errors = False
        self.scan_left = 0  # bytes that bracket matching may still scan (broken files)
        # owner lookup: sorted segment starts and the innermost item (None = file)
        self.bounds_at: list[int] = []
        self.owner_at: list = []

    def text(self, node) -> str:
        return self.data[node.start_byte:node.end_byte].decode("utf-8", "replace")

    def text_compact(self, node) -> str:
        return _compact(self.data[node.start_byte:node.end_byte].decode("utf-8", "replace"))

    def owner(self, pos: int):
        """Innermost item whose span contains byte `pos` (None: the file)."""
        return self.owner_at[bisect_right(self.bounds_at, pos) - 1] if self.bounds_at else None

    def run(self) -> FileFacts:
        caps = tree_sitter.QueryCursor(_QUERY).captures(self.root)
        self.has_errors = self.root.has_error
        if self.has_errors:
            self._collect_errors()
        inner = self._split_comments(caps)
        self._collect_items(caps)
        self._nest_items()
        if self._add_item_macros(caps.get("mac", ())):
            self._nest_items()
        self._attach_inner(inner)
        file_id = "file:" + self.rel
        parts = self.rel.split("/")
        self.file_test = ("tests" in parts[:-1] or parts[-1] == "tests.rs"
                          or (bool(self.file_inner) and self._attr_info((), None, self.file_inner)[2]))
        for it in self.items:
            self._emit_item(it, file_id)
        self.facts.nodes.insert(0, self._file_node(file_id))
        self._calls(caps, file_id)
        self._type_refs(caps, file_id)
        self._impl_trait_args(caps.get("abs", ()))
        f = self.facts
        f.parse_error_count = len(self.err_starts) + len(self.missing)
        f.error_spans = sorted(list(zip(self.err_starts, self.err_ends))
                               + [(m, m) for m in self.missing])
        return f

    # ---------------------------------------------------------------- errors
    def _collect_errors(self):
        """ERROR and MISSING nodes; only subtrees with has_error are visited."""
        stack = [self.root]
        errs, missing = [], []
        while stack:
            n = stack.pop()
            if n.is_error:
                errs.append(n)
            elif n.is_missing:
                missing.append((n.start_byte,) + _owner_span(n))
            for ch in n.children:
                if ch.has_error:
                    stack.append(ch)
        errs.sort(key=lambda n: n.start_byte)
        self.err_nodes = errs
        self.err_starts = [n.start_byte for n in errs]
        self.err_ends = [n.end_byte for n in errs]
        missing.sort()
        self.missing = [m[0] for m in missing]
        self.missing_owner = [m[1:] for m in missing]

    def _errors_within(self, start: int, end: int) -> int:
        n = 0
        owners = self.missing_owner
        for i in range(bisect_left(self.missing, start), bisect_right(self.missing, end)):
            # a zero-width MISSING token at an item's end may belong to its parent
            os, oe = owners[i]
            if start <= os and oe <= end:
                n += 1
        ends = self.err_ends
        for i in range(bisect_left(self.err_starts, start), bisect_left(self.err_starts, end)):
            if ends[i] <= end:
                n += 1
        return n

    # ----------------------------------------------------------------- items
    def _split_comments(self, caps):
        """Outer doc comments go to the leading index with the attributes;
        returns the inner attributes and inner doc comments (`#![..]`, `//!`)."""
        data = self.data
        outer_docs, inner = [], list(caps.get("inner", ()))
        for n in caps.get("comment", ()):
            s = n.start_byte
            if data.startswith(b"///", s):
                if not data.startswith(b"////", s):
                    outer_docs.append(n)
            elif data.startswith(b"//!", s) or data.startswith(b"/*!", s):
                inner.append(n)
            elif data.startswith(b"/**", s) and not data.startswith(b"/***", s) \
                    and not data.startswith(b"/**/", s):
                outer_docs.append(n)
        self._leading_index(caps.get("attr", ()), outer_docs)
        return inner

    def _collect_items(self, caps):
        items = self.items
        leading = self._leading
        for node in caps.get("item", ()):
            start, attrs, docs = leading(node.start_byte)
            items.append(_Item(node, _KIND_BY_ID[node.kind_id], start, node.end_byte, attrs,
                               docs))
        if self.err_nodes:
            self.scan_left = 8 * len(self.data) + 65536
            self._fix_error_extents()
            self._recover_items()

    def _add_item_macros(self, macros) -> bool:
        """Macro invocations directly in a file, module, impl, trait or extern
        block are items (`lazy_static! {..}`); those in bodies and
        initialisers are calls only. Decided by the innermost item around."""
        added = False
        for node in macros:
            s = node.start_byte
            it = self.owner(s)
            if it is not None and it.kind in _MACRO_HOSTS:
                # in the host's body, not its header (`impl From<Token![_]> for X`)
                if it.recovered:
                    body_start = it.header[1]
                else:
                    body = it.node.child_by_field_id(_F_BODY)
                    body_start = body.start_byte if body is not None else it.end
                if s < body_start:
                    continue
            if it is None or it.kind in _MACRO_HOSTS:
                start, attrs, docs = self._leading(s)
                self.items.append(_Item(node, "macro_call", start, node.end_byte, attrs, docs))
                added = True
        return added

    def _fix_error_extents(self):
        """An item containing errors ends where its braces match in the text
        (its `}`, or its `;` outside brackets), as rustc matches delimiters
        before parsing, when that is earlier than tree-sitter's node end:
        error recovery sometimes swallows what follows an item into it."""
        data = self.data
        for it in self.items:
            if it.kind in _NO_EXTENT_FIX or not it.node.has_error or self.scan_left <= 0:
                continue
            s = it.node.start_byte
            limit = min(it.end, s + self.scan_left)
            end = _item_extent(data, s, it.kind, limit, limit)[1]
            self.scan_left -= end - s
            if end < limit:  # closed before tree-sitter's end (not just out of budget)
                it.end = end

    def _leading_index(self, attrs, docs):
        """Sorted spans of all attributes and outer doc comments of the file.
        (Walking an item's previous siblings instead costs a parent lookup
        from the root for every step.)"""
        spans = [(n.start_byte, n.end_byte, True) for n in attrs]
        spans.extend((n.start_byte, n.end_byte, False) for n in docs)
        spans.sort()  # capture lists are not always in document order
        self.lead = spans
        self.lead_ends = [sp[1] for sp in spans]

    def _leading(self, pos):
        """Attributes and doc comments right before an item starting at `pos`
        (separated by whitespace or plain comments only).
        -> (start including them, [(attr start, end)] or None, doc region or None)."""
        i = bisect_right(self.lead_ends, pos) - 1
        if i < 0:
            return pos, None, None
        data = self.data
        lead = self.lead
        attrs = None
        doc_end = -1
        start = pos
        while i >= 0:
            s, e, is_attr = lead[i]
            if start - e > 2048:
                break  # too far away to belong to this item
            gap = data[e:start]
            if gap and not gap.isspace() and (b"//" not in gap or not _only_comments(gap)):
                break
            if is_attr:
                if attrs is None:
                    attrs = []
                attrs.append((s, e))
            elif doc_end < 0:
                doc_end = e
            start = s
            i -= 1
        if attrs is not None:
            attrs.reverse()
        docs = None
        if doc_end >= 0:  # from the start of the first doc line (`^` anchors there)
            docs = (data.rfind(b"\n", 0, start) + 1, doc_end)
        return start, attrs, docs

    def _recover_items(self):
        """Rebuild items that tree-sitter left as loose tokens inside ERROR
        regions, from the text: an item keyword at a line start, its name, and
        its extent by bracket matching (literals and comments skipped). Text
        is used because error recovery can break a complete earlier item apart
        (e.g. when garbage follows it); bracket matching gives it back its span."""
        data = self.data
        parsed = sorted(it.node.start_byte for it in self.items)
        ranges = []  # top-level ERROR regions, each from the start of its line
        for n in self.err_nodes:
            s, e = n.start_byte, n.end_byte
            if ranges and s < ranges[-1][1]:
                if e > ranges[-1][1]:
                    ranges[-1] = (ranges[-1][0], e)
                continue
            ranges.append((data.rfind(b"\n", 0, s) + 1, e))
        for lo, hi in ranges:
            dead = [m.span() for m in _DEAD_RE.finditer(data, lo, hi)]
            dead_starts = [d[0] for d in dead]
            for m in _ITEM_START_RE.finditer(data, lo, hi):
                start, kw_end = m.start("item"), m.end("kw")
                k = bisect_left(parsed, start)
                if k < len(parsed) and parsed[k] <= kw_end:
                    continue  # tree-sitter built this item
                d = bisect_right(dead_starts, start) - 1
                if d >= 0 and start < dead[d][1]:
                    continue  # inside a string or comment
                it = self._recover_one(start, kw_end, _RECOVER_KIND[m.group("kw")])
                if it is not None:
                    self.items.append(it)

    def _recover_one(self, start, kw_end, kind):
        data = self.data
        name = ""
        pos = kw_end
        if kind != "impl" and kind != "use":
            m = _NAME_RE.match(data, kw_end)
            if m is None:
                return None  # `fn(` type, `impl` argument...: not an item
            name = m.group(1).decode("utf-8", "replace")
            pos = m.end()
        # bracket matching, within a budget so that a file full of unclosed
        # items stays linear; a header that runs into the next item at a line
        # start was cut short (`fn f(x: u8` + newline)
        limit = min(len(data), pos + max(self.scan_left, 0))
        nxt = _ITEM_START_RE.search(data, pos, limit)
        header_limit = nxt.start() if nxt is not None else limit
        header_end, end = _item_extent(data, pos, kind, limit, header_limit)
        self.scan_left -= end - pos
        if end == header_limit and nxt is not None and end == header_end:
            while end > start and data[end - 1] in b" \t\r\n":
                end -= 1
        if self.scan_left <= 0 and end == limit:  # out of budget: the header line only
            line_end = data.find(b"\n", pos)
            header_end = end = line_end if line_end >= 0 else len(data)
        lead_start, attrs, docs = self._leading(start)
        it = _Item(None, kind, lead_start, end, attrs, docs, recovered=True)
        if kind == "use":  # the same segment as a parsed `use`
            name = "<use " + _collapse(data[kw_end:header_end].decode("utf-8", "replace")) + ">"
        it.name = name
        it.header = (start, header_end)
        return it

    def _nest_items(self):
        """Sort items, find parents with a span stack, and build the owner
        lookup (segment starts -> innermost item) in the same sweep."""
        items = self.items
        items.sort(key=lambda it: (it.start, -it.end))
        stack: list[_Item] = []
        bounds_at, owner_at = self.bounds_at, self.owner_at = [], []
        for it in items:
            while stack and stack[-1].end <= it.start:
                done = stack.pop()
                bounds_at.append(done.end)
                owner_at.append(stack[-1] if stack else None)
            if stack:
                top = stack[-1]
                if it.end > top.end:
                    it.end = top.end  # a recovered span never crosses its parent
                it.parent = top
                # ISGL1: items directly in a file or inline module; deeper +1
                it.level = 1 if top.kind == "mod" else top.level + 1
            else:
                it.parent = None
                it.level = 1
            bounds_at.append(it.start)
            owner_at.append(it)
            stack.append(it)
        while stack:
            done = stack.pop()
            bounds_at.append(done.end)
            owner_at.append(stack[-1] if stack else None)

    def _attach_inner(self, nodes):
        """`#![...]` and `//!` belong to the innermost enclosing item (or file)."""
        for node in nodes:
            it = self.owner(node.start_byte)
            if it is None:
                self.file_inner.append(node)
            elif it.inner is None:
                it.inner = [node]
            else:
                it.inner.append(node)

    # ------------------------------------------------------- item -> facts
    def _emit_item(self, it: _Item, file_id: str):
        """The `nodes` and `code` rows of one item, and its kind's own rows."""
        parent = it.parent
        parent_id = parent.id if parent is not None else file_id
        data = self.data
        if it.recovered:
            sig, vis, gen, where, tparams, wnode = self._recovered_details(it)
        else:
            sig, vis, gen, where, tparams, wnode = self._details(it)
        iid = self._assign_id(it, parent)
        kind = it.kind
        f = self.facts

        if it.attrs or it.docs or it.inner:
            cfg, features, is_test, doc, path_attr = self._attr_info(
                it.attrs or (), it.docs, it.inner)
        else:
            cfg, features, is_test, doc, path_attr = [], [], False, "", ""
        it.is_test = is_test or (parent.is_test if parent is not None else self.file_test)

        s, e = it.start, it.end
        raw = data[s:e]
        node = it.node
        # items come in start order: count lines incrementally
        line_start = self.line_at[1] + data.count(b"\n", self.line_at[0], s)
        self.line_at = (s, line_start)
        if it.recovered or e != node.end_byte:
            line_end = line_start + raw.count(b"\n", 0, len(raw) - 1)
        else:
            line_end = node.end_point.row + 1
        errs = self._errors_within(s, e) if self.has_errors else 0
        if it.recovered and errs == 0:
            errs = 1
        f.nodes.append((iid, self.rel, kind, it.name, it.item_path, parent_id, it.level, sig,
                        vis, gen, where, cfg, features, it.is_test, doc, s, e, line_start,
                        line_end, errs, blake3.blake3(raw).hexdigest(), errs > 0))
        f.code.append((iid, raw.decode("utf-8", "replace")))
        self._kind_rows(it, parent_id, sig, vis, path_attr, tparams, wnode)

    def _assign_id(self, it: _Item, parent) -> str:
        """Id from the parent's item path; `~n` on the segment of later duplicates."""
        seg = it.seg
        item_path = parent.item_path + "::" + seg if parent is not None else seg
        iid = it.kind + ":" + self.rel + "::" + item_path
        seen = self.seen_ids
        if iid in seen:
            n = seen[iid] = seen[iid] + 1
            seg = seg + "~" + str(n)
            item_path = parent.item_path + "::" + seg if parent is not None else seg
            iid = it.kind + ":" + self.rel + "::" + item_path
        seen[iid] = 1
        it.seg, it.item_path, it.id = seg, item_path, iid
        return iid

    def _kind_rows(self, it, parent_id, sig, vis, path_attr, tparams, wnode):
        """uses / impls / mods / bounds rows, depending on the item's kind."""
        f = self.facts
        kind, iid, node, e = it.kind, it.id, it.node, it.end
        if kind == "use" and not it.recovered:
            for path, name, alias, glob in self._use_rows(node):
                f.uses.append((parent_id, iid, path, name, alias, glob, vis))
        elif kind == "impl":
            f.impls.append((iid,) + (_impl_row_text(sig) if it.recovered
                                     else self._impl_row(node)))
        elif kind == "mod":
            inline = (it.header[1] < e) if it.recovered else (
                node.child_by_field_id(_F_BODY) is not None)
            f.mods.append((iid, it.name, inline, path_attr))
        if tparams is not None or wnode is not None or (
                (kind == "trait" or kind == "type") and not it.recovered):
            self._bounds(it, node, tparams, wnode)

    def _details(self, it: _Item):
        """Name, segment, signature... of a parsed item.
        -> (signature, visibility, generics, where text, type_parameters, where node)."""
        node = it.node
        data = self.data
        kind = it.kind
        start = node.start_byte
        vis = ""
        if data.startswith(b"pub", start):
            m = _VIS_BYTES_RE.match(data, start)
            if m:
                vis = "".join(m.group(0).decode("utf-8", "replace").split())
        # the signature stops at the `{` body, or before `= value` of const/static
        sig_end = node.end_byte
        body = node.child_by_field_id(_F_BODY)
        if kind == "const" or kind == "static" or kind == "variant":
            value = node.child_by_field_id(_F_VALUE)
            if value is not None:
                sig_end = data.rfind(b"=", start, value.start_byte)
        elif body is not None and body.kind_id != _TUPLE_FIELDS_KIND:
            sig_end = body.start_byte
        sig = " ".join(data[start:sig_end].decode("utf-8", "replace").split())
        if sig[-1:] == ";":
            sig = sig[:-1].rstrip()

        tparams = wnode = None
        gen = where = ""
        if kind in _GENERIC_KINDS:
            tparams = node.child_by_field_id(_F_TPARAMS)
            if tparams is not None:
                gen = data[tparams.start_byte:tparams.end_byte].decode("utf-8", "replace")
            if data.find(b"where", start, node.end_byte if body is None else body.start_byte) >= 0:
                for ch in node.children:
                    if ch.type == "where_clause":
                        wnode = ch
                        where = _collapse(self.text(ch))
                        break

        if kind == "impl":
            hdr_end = wnode.start_byte if wnode is not None else (
                body.start_byte if body is not None else node.end_byte)
            name = "<" + _collapse(data[start:hdr_end].decode("utf-8", "replace")) + ">"
        elif kind == "use":
            name = self._use_segment(node)
        elif kind == "extern_block":
            name = "<" + sig + ">"
        elif kind == "macro_call":
            mac = node.child_by_field_id(_F_MACRO)
            name = self.text_compact(mac) if mac is not None else ""
            sig = name + "!"
        else:
            nn = node.child_by_field_id(_F_NAME)
            name = data[nn.start_byte:nn.end_byte].decode("utf-8", "replace") if nn else ""
            if kind == "macro_rules":
                sig = "macro_rules! " + name
            elif kind in _TYPE_NAMED and nn is not None:
                self.type_skip.add(nn.start_byte)  # a definition, not a type mention
        it.name = name
        it.seg = name or "<missing>"
        return sig, vis, gen, where, tparams, wnode

    def _recovered_details(self, it: _Item):
        hs, he = it.header
        hdr = _collapse(self.data[hs:he].decode("utf-8", "replace")).rstrip("{;").rstrip()
        m = _VIS_RE.match(hdr)
        vis = m.group(0).replace(" ", "") if m else ""
        if it.kind == "impl":
            seg = hdr[m.end():].strip() if m else hdr
            w = _WHERE_RE.search(seg)
            it.name = "<" + (seg[:w.start()] if w else seg) + ">"
        it.seg = it.name or "<missing>"
        return hdr, vis, "", "", None, None

    def _attr_info(self, attrs, docs=None, inner=None):
        """Attributes, outer doc region and inner attributes/docs ->
        (cfg list, features, is_test, doc text, #[path] value)."""
        data = self.data
        cfg = []
        features = []
        is_test = False
        path_attr = ""
        doc_parts = []  # (position, text) for `#[doc = ..]` and inner docs
        if inner:
            attrs = list(attrs)
            for n in sorted(inner, key=lambda n: n.start_byte):
                if n.type == "inner_attribute_item":
                    attrs.append((n.start_byte, n.end_byte))
                else:
                    doc_parts.append((n.start_byte, _doc_text(data[n.start_byte:n.end_byte])))
        for s, e in attrs:
            off = s + (3 if data[s + 1] == 33 else 2)  # `#![` or `#[`
            if not data.startswith(_ATTR_HEADS, off) and data.find(b"test", off, e) < 0:
                continue  # derive, inline, allow...: nothing to record
            body = data[off:e - 1].decode("utf-8", "replace")
            name, paren, rest = body.partition("(")
            name = name.strip()
            if paren and (name == "cfg" or name == "cfg_attr"):
                pred = rest.rsplit(")", 1)[0].strip()
                if name == "cfg":
                    cfg.append(_collapse(pred))
                    is_test = is_test or _is_test_cfg(pred)
                else:
                    cfg.append("cfg_attr:" + _collapse(_first_arg(pred)))
                continue
            key, eq, value = body.partition("=")
            key = key.strip()
            if eq and key == "doc":
                doc_parts.append((s, _string_value(value)))
            elif eq and key == "path":
                path_attr = _string_value(value)
            elif key == "test" or key == "bench" or key.endswith("::test"):
                is_test = True
        doc = ""
        if docs is not None:
            ds, de = docs
            if not doc_parts and data.find(b"/**", ds, de) < 0:
                # common case: only `///` lines
                doc = b"\n".join(_DOC_LINE_RE.findall(data, ds, de)).decode(
                    "utf-8", "replace").strip()
            else:
                for m in _DOC_RE.finditer(data, ds, de):
                    line = m.group(1)
                    doc_parts.append((m.start(), line.decode("utf-8", "replace")
                                      if line is not None else _doc_text(m.group(0))))
        if doc_parts:
            doc_parts.sort()
            doc = "\n".join(t.rstrip("\r") for _, t in doc_parts).strip()
        for c in cfg:
            if "feature" in c:
                for name in _FEATURE_RE.findall(c):
                    if name not in features:
                        features.append(name)
        return cfg, features, is_test, doc, path_attr

    def _file_node(self, file_id):
        data = self.data
        if self.file_inner:
            cfg, features, _, doc, _ = self._attr_info((), None, self.file_inner)
        else:
            cfg, features, doc = [], [], ""
        stem = self.rel.rsplit("/", 1)[-1]
        if stem.endswith(".rs"):
            stem = stem[:-3]
        rows = data.count(b"\n")
        line_end = rows + 1 if len(data) > data.rfind(b"\n") + 1 else max(rows, 1)
        errs = len(self.err_starts) + len(self.missing)
        return (file_id, self.rel, "file", stem, "", "", 0, "", "", "", "", cfg, features,
                self.file_test, doc, 0, len(data), 1, line_end, errs,
                blake3.blake3(data).hexdigest(), errs > 0)

    # ------------------------------------------------------- uses and impls
    def _use_segment(self, node) -> str:
        if node.type == "extern_crate_declaration":
            nn = node.child_by_field_id(_F_NAME)
            al = node.child_by_field_id(_F_ALIAS)
            name = self.text(nn) if nn is not None else ""
            return "<extern crate " + name + (" as " + self.text(al) if al is not None else "") + ">"
        arg = node.child_by_field_id(_F_ARGUMENT)
        return "<use " + (_collapse(self.text(arg)) if arg is not None else "") + ">"

    def _use_rows(self, node):
        """One (path, bound name, alias, is_glob) per imported leaf of a use tree."""
        if node.type == "extern_crate_declaration":
            nn = node.child_by_field_id(_F_NAME)
            al = node.child_by_field_id(_F_ALIAS)
            name = self.text(nn) if nn is not None else ""
            alias = self.text(al) if al is not None else ""
            return [(name, alias or name, alias, False)]
        rows = []
        arg = node.child_by_field_id(_F_ARGUMENT)
        stack = [(arg, "")] if arg is not None else []
        while stack:
            n, prefix = stack.pop()
            t = n.type
            if t == "use_list":
                for ch in reversed(n.named_children):
                    stack.append((ch, prefix))
            elif t == "scoped_use_list":
                p = n.child_by_field_id(_F_PATH)
                lst = n.child_by_field_id(_F_LIST)
                if lst is not None:
                    stack.append((lst, _join(prefix, self.text_compact(p)) if p is not None
                                  else prefix))
            elif t == "use_as_clause":
                p = n.child_by_field_id(_F_PATH)
                al = n.child_by_field_id(_F_ALIAS)
                alias = self.text(al) if al is not None else ""
                ptxt = self.text_compact(p) if p is not None else ""
                full = prefix if ptxt == "self" else _join(prefix, ptxt)
                rows.append((full, alias or _last_segment(full), alias, False))
            elif t == "use_wildcard":
                base = self.text_compact(n)[:-1]
                if base.endswith("::"):
                    base = base[:-2]
                rows.append((_join(prefix, base), "*", "", True))
            elif t in ("identifier", "scoped_identifier", "self", "super", "crate",
                       "metavariable"):
                ptxt = self.text_compact(n)
                full = prefix if (ptxt == "self" and prefix) else _join(prefix, ptxt)
                rows.append((full, _last_segment(full), "", False))
        return rows

    def _impl_row(self, node):
        """-> (trait_path, trait_name, self_path, self_name); trait '' if inherent."""
        trait = node.child_by_field_id(_F_TRAIT)
        self_ty = node.child_by_field_id(_F_TYPE)
        tpath = tname = ""
        if trait is not None:
            tpath, tname = self._type_path(trait)
            k = trait.start_byte - 1
            while k > 0 and self.data[k] in b" \t\r\n":
                k -= 1
            if self.data[k] == 33:  # `impl !Sync for X`: a negative impl
                tpath, tname = "!" + tpath, "!" + tname
        spath, sname = self._type_path(self_ty) if self_ty is not None else ("", "")
        return tpath, tname, spath, sname

    def _type_path(self, node):
        """Type node -> (path without generics or references, last segment)."""
        while node.type in ("reference_type", "pointer_type"):
            inner = node.child_by_field_id(_F_TYPE)
            if inner is None:
                break
            node = inner
        if node.type == "generic_type":
            node = node.child_by_field_id(_F_TYPE) or node
        path = self.text_compact(node)
        return path, _last_segment(path)

    # ---------------------------------------------------------------- bounds
    def _bounds(self, it, node, tparams, where):
        out = self.facts.bounds
        iid = it.id
        if tparams is not None:
            params = set()
            for p in tparams.named_children:
                if p.type != "type_parameter":
                    continue  # lifetimes and const generics carry no trait bounds
                n = p.child_by_field_id(_F_NAME)
                if n is None:
                    continue
                pname = self.text(n)
                params.add(pname)
                b = p.child_by_field_id(_F_BOUNDS)
                if b is not None:
                    self._emit_bounds(out, iid, pname, b)
            it.params = params
        if where is not None:
            for pred in where.named_children:
                if pred.type != "where_predicate":
                    continue
                left = pred.child_by_field_id(_F_LEFT)
                b = pred.child_by_field_id(_F_BOUNDS)
                if left is None or b is None or left.type == "lifetime":
                    continue
                if left.type == "higher_ranked_trait_bound":
                    left = left.child_by_field_id(_F_TYPE) or left
                self._emit_bounds(out, iid, _collapse(self.text(left)), b)
        if it.kind == "trait" or node.type == "associated_type":
            b = node.child_by_field_id(_F_BOUNDS)
            if b is not None:
                self._emit_bounds(out, iid, "Self" if it.kind == "trait" else it.name, b)

    def _emit_bounds(self, out, iid, param, bounds_node):
        for b in bounds_node.named_children:
            entry = self._bound_entry(b)
            if entry is not None:
                out.append((iid, param, entry[0], entry[1]))

    def _bound_entry(self, b):
        """A trait bound node -> (path without generics, last segment) or None."""
        prefix = ""
        t = b.type
        if t == "removed_trait_bound":
            prefix = "?"
            b = b.named_child(0)
        elif t == "higher_ranked_trait_bound":
            b = b.child_by_field_id(_F_TYPE)
        elif t == "tuple_type" and b.named_child_count == 1:
            b = b.named_child(0)  # `(Trait)`
        if b is None:
            return None
        t = b.type
        if t in ("lifetime", "line_comment", "block_comment", "use_bounds"):
            return None
        if t == "function_type":  # Fn(u8) -> u8
            b = b.child_by_field_id(_F_TRAIT)
        elif t == "generic_type":
            b = b.child_by_field_id(_F_TYPE)
        if b is None:
            return None
        path = self.text_compact(b)
        return prefix + path, prefix + _last_segment(path)

    def _impl_trait_args(self, abs_nodes):
        """`fn f(x: impl Tr)`: bound `Tr` on the anonymous parameter `impl:x`."""
        out = self.facts.bounds
        for a in abs_nodes:
            p = a.parent
            while p is not None and p.type in ("reference_type", "pointer_type", "bounded_type"):
                p = p.parent
            if p is None or p.type != "parameter":
                continue
            owner = self.owner(a.start_byte)
            tr = a.child_by_field_id(_F_TRAIT)
            if owner is None or tr is None:
                continue
            pat = p.child_by_field_id(_F_PATTERN)
            param = "impl:" + (self.text_compact(pat) if pat is not None else "_")
            for b in (tr.named_children if tr.type == "bounded_type" else (tr,)):
                entry = self._bound_entry(b)
                if entry is not None:
                    out.append((owner.id, param, entry[0], entry[1]))

    # ----------------------------------------------------------------- calls
    def _calls(self, caps, file_id):
        out = self.facts.calls
        append = out.append
        data = self.data
        bounds_at = self.bounds_at
        owner_ids = [it.id if it is not None else file_id for it in self.owner_at]
        if not bounds_at:  # no items: everything belongs to the file
            bounds_at, owner_ids = [0], [file_id]
        for call in caps.get("call", ()):
            f = call.child(0)  # the `function` field comes first
            if f is None:
                continue
            ft = f.type
            if ft == "generic_function":  # foo::<T>() / x.foo::<T>()
                f = f.child_by_field_id(_F_FUNCTION) or f
                ft = f.type
            if ft == "field_expression":
                fld = f.child_by_field_id(_F_FIELD)
                if fld is None:
                    continue
                s, e = fld.start_byte, fld.end_byte
                name = path = data[s:e].decode("utf-8", "replace")
                kind = "method"
                rs = f.start_byte
                recv = " ".join(data[rs:min(data.rfind(b".", rs, s), rs + 400)]
                                .decode("utf-8", "ignore").split())[:80]
                line = fld.start_point.row + 1
            else:
                s, e = f.start_byte, f.end_byte
                recv = ""
                line = f.start_point.row + 1
                if ft == "identifier":
                    name = path = data[s:e].decode("utf-8", "replace")
                    kind = "plain"
                elif ft == "scoped_identifier":
                    path = _compact(data[s:e].decode("utf-8", "replace"))
                    if "<" in path:
                        path = _strip_turbofish(path)
                    name = _last_segment(path)
                    kind = "path"
                else:  # `(self.f)(..)`, `f()(..)`...
                    path = _collapse(data[s:min(e, s + 400)].decode("utf-8", "ignore"))[:80]
                    name = ""
                    kind = "expr"
            append((owner_ids[bisect_right(bounds_at, s) - 1], path, name, recv, kind, s, e,
                    line, False))
        for mac in caps.get("mac", ()):
            caller = owner_ids[bisect_right(bounds_at, mac.start_byte) - 1]
            m = mac.child_by_field_id(_F_MACRO)
            if m is not None:
                s, e = m.start_byte, m.end_byte
                path = _compact(data[s:e].decode("utf-8", "replace"))
                append((caller, path, _last_segment(path), "", "macro", s, e,
                        m.start_point.row + 1, False))
            tt = mac.child(mac.child_count - 1)
            if tt is not None and tt.type == "token_tree":
                lo, hi = tt.start_byte, tt.end_byte
                if data.find(b"(", lo + 1, hi) >= 0:
                    self._scan_tokens(lo, hi, tt.start_point.row + 1, caller, out)

    def _scan_tokens(self, tt_start, tt_end, line, caller, out):
        """Calls inside a macro token tree: `f(`, `a::b(`, `x.m(`, `m!(`.
        A cheap regex finds every `(` / `!` outside literals and comments; the
        name, and a `.` or `::` path before it, are read backwards from there."""
        data = self.data
        lo, hi = tt_start + 1, tt_end
        last = lo
        ident_chars = _IDENT_CHARS
        for m in _TT_RE.finditer(data, lo, hi):
            p = m.start()
            c = data[p]
            if c == 33:  # `!`: a macro call only if a bracket follows
                q = p + 1
                while q < hi and data[q] in b" \t\r\n":
                    q += 1
                if q >= hi or data[q] not in b"([{":
                    continue
            elif c != 40:
                continue  # a literal or comment
            j = p
            while j > lo and data[j - 1] in b" \t\r\n":
                j -= 1
            if c == 40 and data[j - 1] == 62:  # `name::<T>(`
                j = _skip_turbofish(data, j, lo)
            e = j
            while j > lo and data[j - 1] in ident_chars:
                j -= 1
            if j == e or 48 <= data[j] <= 57:
                continue  # `(` after an operator / bracket, or a number
            s = span_start = j
            name = data[s:e].decode("utf-8", "replace")
            while j > lo and data[j - 1] in b" \t\r\n":
                j -= 1
            b1 = data[j - 1] if j > lo else 0
            recv = ""
            if b1 == 46 and data[j - 2] != 46:  # `.name(`, not `..name(`
                kind = "method"
                path = name
                recv = _receiver(data, j - 1, lo)
            elif b1 == 58 and data[j - 2] == 58 and j - 2 >= lo:  # `a::b::name(`
                ps = _path_start(data, j - 2, lo)
                path = _compact(data[ps:s].decode("utf-8", "replace"))
                if "<" in path:
                    path = _strip_turbofish(path)
                path += name
                kind = "path"
                span_start = ps  # the span covers the whole path, as for parsed calls
            else:
                if name in _NOT_CALLEES or (data[j - 2:j] == b"fn" and
                                            (j - 3 < lo or data[j - 3] not in ident_chars)):
                    continue  # a keyword, or `fn name(` (an item defined in the macro)
                path = name
                kind = "plain"
            if c == 33:
                kind = "macro"
            line += data.count(b"\n", last, s)
            last = s
            out.append((caller, path, name, recv, kind, span_start, e, line, True))

    # -------------------------------------------------------------- type refs
    def _type_refs(self, caps, file_id):
        """Type names mentioned by each item (one row per item and type path).
        Skipped: definitions (struct/enum/.. names), generic parameters of the
        item or its parents, `Item` in `Iterator<Item = T>`, and `Self`."""
        data = self.data
        skip = self.type_skip
        bounds_at, owner_at = self.bounds_at or [0], self.owner_at or [None]
        params = set()  # every generic parameter name of the file: a cheap pre-check
        for it in self.items:
            if it.params:
                params |= it.params
        out = self.facts.type_refs
        seen = set()
        for n in caps.get("sty", ()):
            s, e = n.start_byte, n.end_byte
            path = _compact(data[s:e].decode("utf-8", "replace"))
            name = _last_segment(path)
            skip.add(e - len(name.encode()))  # its last segment is a type_identifier too
            if path.startswith("Self::"):
                continue  # associated type of the same impl/trait
            it = owner_at[bisect_right(bounds_at, s) - 1]
            key = (it.id if it is not None else file_id, path)
            if key not in seen:
                seen.add(key)
                out.append((key[0], path, name, s))
        for n in caps.get("ty", ()):
            s, e = n.start_byte, n.end_byte
            if s in skip:
                continue
            name = data[s:e].decode("utf-8", "replace")
            it = owner_at[bisect_right(bounds_at, s) - 1]
            key = (it.id if it is not None else file_id, name)
            if key in seen or name == "Self":
                continue
            if name in params and _is_param(it, name):
                continue  # a generic parameter (its definition or a use), not a type
            if data[e:e + 3].lstrip()[:1] == b"=" and data[max(s - 2, 0):s].rstrip()[-1:] in (
                    b"<", b","):
                continue  # `Item = u8` inside generic arguments names an associated type
            seen.add(key)
            out.append((key[0], name, name, s))

def _collapse(text: str) -> str:
    return " ".join(text.split())


def _compact(text: str) -> str:
    """Path text without layout whitespace: `a :: b` -> `a::b`; words keep
    one space (`<T as Tr>::f`)."""
    if " " not in text and "\n" not in text and "\t" not in text and "\r" not in text:
        return text
    return _SPACE_PUNCT_RE.sub(r"\1", _collapse(text))


def _last_segment(path: str) -> str:
    return path.rsplit("::", 1)[-1]


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + "::" + path


def _strip_turbofish(path: str) -> str:
    """`Vec::<u8>::new` -> `Vec::new`; `<T as Tr>::f` is kept (not a turbofish)."""
    while True:
        i = path.find("::<")
        if i < 0:
            return path
        depth, j = 0, i + 2
        while j < len(path):
            c = path[j]
            if c == "<":
                depth += 1
            elif c == ">":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        path = path[:i] + path[j + 1:]


def _only_comments(gap: bytes) -> bool:
    """Is this text between attributes/docs and an item only plain comments?"""
    for line in gap.split(b"\n"):
        line = line.strip()
        if line and not line.startswith(b"//"):
            return False
    return True


def _impl_row_text(header: str):
    """(trait_path, trait_name, self_path, self_name) from a recovered impl
    header such as `unsafe impl<T: X> Tr<T> for Foo<T> where T: Y`."""
    rest = header[header.find("impl") + 4:].lstrip()
    if rest.startswith("<"):
        rest = rest[_angle_end(rest, 0):].lstrip()
    w = _WHERE_RE.search(rest)
    if w:
        rest = rest[:w.start()]
    trait, sep, ty = rest.partition(" for ")
    if not sep:
        trait, ty = "", trait
    ty = re.sub(r"^(?:&\s*(?:'\w+\s+)?(?:mut\s+)?|\*\s*(?:const|mut)\s+)+", "", ty.strip())
    tpath, spath = _strip_generics(trait.strip()), _strip_generics(ty)
    return tpath, _last_segment(tpath), spath, _last_segment(spath)


def _angle_end(text: str, i: int) -> int:
    """Index after the `>` matching the `<` at `i` (or the end)."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "<":
            depth += 1
        elif text[j] == ">":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def _strip_generics(path: str) -> str:
    """`a::Foo<T>::Bar<U>` -> `a::Foo::Bar` (whitespace removed)."""
    path = _compact(path)
    while "<" in path:
        i = path.index("<")
        path = path[:i] + path[_angle_end(path, i):]
    return path


def _item_extent(data: bytes, pos: int, kind: str, limit: int, header_limit: int):
    """-> (header end, item end) of an item whose header continues at `pos`:
    its body `{..}` is matched, `;` outside brackets ends a bodiless item,
    const/static/type/use end at their `;`. No `{` or `;` before
    `header_limit`: the header stops there. Unclosed: the item ends at `limit`."""
    paren = brace = 0
    header_end = -1
    valued = kind in ("const", "static", "type", "use")  # end at `;`, not at `}`
    for m in _SCAN_RE.finditer(data, pos, limit):
        s = m.start()
        if header_end < 0 and brace == 0 and s >= header_limit:
            return header_limit, header_limit
        if m.end() - s > 1:
            continue  # literal or comment
        c = data[s]
        if c == 40 or c == 91:  # ( [
            paren += 1
        elif c == 41 or c == 93:  # ) ]
            paren = max(paren - 1, 0)
        elif c == 123:  # {
            if brace == 0 and header_end < 0 and kind != "use":
                header_end = s
            brace += 1
        elif c == 125:  # }
            brace -= 1
            if brace < 0:  # the parent's closing brace: this item had no body
                return (header_end if header_end >= 0 else s), s
            if brace == 0 and not valued:
                return header_end, s + 1
        elif c == 59:  # ;
            if paren == 0 and brace == 0:
                return (header_end if header_end >= 0 else s), s + 1
        elif c == 61 and valued and kind != "type" and paren == 0 and brace == 0 \
                and header_end < 0:  # `=` of const/static (not `==`, `=>`)
            if data[s + 1:s + 2] not in (b"=", b">") and data[s - 1:s] not in (b"=", b"!", b"<", b">"):
                header_end = s
    if header_end < 0:
        header_end = min(header_limit, limit)
    return header_end, limit


def _owner_span(node):
    """Span of the nearest enclosing item node (or everything for the root)."""
    p = node.parent
    while p is not None and p.type not in _KIND and p.parent is not None:
        p = p.parent
    if p is None or p.parent is None:
        return (0, 1 << 62)
    return (p.start_byte, p.end_byte)


def _is_param(it: _Item, name: str) -> bool:
    """Is `name` a generic type parameter of this item or an enclosing one?"""
    while it is not None:
        if it.params and name in it.params:
            return True
        it = it.parent
    return False


def _receiver(data: bytes, dot: int, lo: int) -> str:
    """Receiver text before `.name(` in a token tree: balanced brackets and
    path/field characters, at most 80 chars."""
    i = dot
    while i > lo and data[i - 1] in b" \t\r\n":
        i -= 1
    end = i
    floor = max(lo, dot - 400)
    depth = 0
    while i > floor:
        c = data[i - 1]
        if c in b")]}>":
            depth += 1
        elif c in b"([{<":
            if depth == 0:
                break
            depth -= 1
        elif c == 34:  # a string literal receiver: jump to its opening quote
            q = data.rfind(b'"', floor, i - 1)
            while q > floor and data[q - 1] == 92:
                q = data.rfind(b'"', floor, q - 1)
            if q < floor:
                break
            i = q
            continue
        elif depth == 0 and c not in _RECV_CHARS:
            break
        i -= 1
    return _collapse(data[i:end].decode("utf-8", "ignore"))[:80]


def _back_over_angles(data: bytes, i: int, lo: int) -> int:
    """`i` is just after a `>`: scan back to its matching `<` and return that position."""
    depth = 0
    while i > lo:
        c = data[i - 1]
        i -= 1
        if c == 62:
            depth += 1
        elif c == 60:
            depth -= 1
            if depth == 0:
                break
    return i


def _skip_turbofish(data: bytes, j: int, lo: int) -> int:
    """`j` is just after the `>` of `name::<T>`: return the position after `name`."""
    i = _back_over_angles(data, j, lo)
    while i > lo and data[i - 1] in b" \t\r\n":
        i -= 1
    if data[i - 2:i] == b"::":
        i -= 2
        while i > lo and data[i - 1] in b" \t\r\n":
            i -= 1
        return i
    return j  # not a turbofish (`a < b > (c)`): no name here


def _path_start(data: bytes, k: int, lo: int) -> int:
    """Start of the path whose `::` before the last segment is at `k`
    (`a::b::<T>::`, `<T as Tr>::`, `::std::`), scanning backwards."""
    start = k
    i = k
    while True:
        while i > lo and data[i - 1] in b" \t\r\n":
            i -= 1
        if i > lo and data[i - 1] == 62:  # `>`: generic args or a qualified type
            i = _back_over_angles(data, i, lo)
            if data[i - 2:i] != b"::":
                return i  # `<T as Tr>::name`
            start = i = i - 2
            continue
        e = i
        while i > lo and data[i - 1] in _IDENT_CHARS:
            i -= 1
        if i == e:
            return start  # leading `::` (global path)
        start = i
        while i > lo and data[i - 1] in b" \t\r\n":
            i -= 1
        if data[i - 2:i] == b"::" and i - 2 >= lo:
            start = i = i - 2
            continue
        return start


def _is_test_cfg(pred: str) -> bool:
    """`cfg(test)` or `cfg(all(test, ..))`; `not(test)` / `any(test, ..)` are not."""
    pred = pred.replace(" ", "")
    if pred == "test":
        return True
    return (pred.startswith("all(") and "not(" not in pred and "any(" not in pred
            and re.search(r"[(,]test[),]", pred) is not None)


def _first_arg(args: str) -> str:
    depth = 0
    for i, c in enumerate(args):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            return args[:i].strip()
    return args.strip()


def _string_value(text: str) -> str:
    """The value of `= "..."` in an attribute (common escapes handled)."""
    text = text.strip()
    if text.startswith("r"):
        text = text[1:].strip("#")
        return text[1:-1] if len(text) >= 2 else ""
    if len(text) >= 2 and text[0] == '"':
        end = text.rfind('"')
        body = text[1:end] if end > 0 else text[1:]
        return body.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
    return text


def _doc_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if text.startswith("///") or text.startswith("//!"):
        text = text[3:].rstrip("\r\n")
        return text[1:] if text.startswith(" ") else text
    text = text[3:-2] if text.endswith("*/") else text[3:]  # /** .. */ or /*! .. */
    lines = []
    for ln in text.splitlines():
        ln = ln.strip()
        if ln.startswith("*") and not ln.startswith("**"):
            ln = ln[1:].lstrip()
        lines.append(ln)
    return "\n".join(lines).strip()
