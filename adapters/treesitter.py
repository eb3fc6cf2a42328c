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
parse_error_count: int, error_spans: [(start_byte, end_byte)]

Kinds: file, fn, struct, enum, variant, union, trait, impl, mod, const, static,
type, macro_rules, macro_call, extern_block, use.

Ids are ``{kind}:{rel_path}::{item_path}`` (the file node: ``file:{rel_path}``).
``item_path`` joins the segments of the enclosing items with ``::``. A segment
is the item name, except for ``<impl Trait for Type>`` / ``<impl Type>``,
``<use a::{b,c}>`` (use tree text, whitespace removed), ``<extern crate x>`` and
``<extern "C">`` (extern blocks). When two items would get the same id, the
later ones (source order) get ``~2``, ``~3``... on their own segment, which
their children inherit. No line numbers, so ids survive insertions above.

Spans are byte offsets and include leading attributes and doc comments;
lines are 1-based. ``call_kind`` is one of ``plain`` (``foo()``), ``path``
(``a::b()``, ``Self::new()``, turbofish removed), ``method`` (``x.foo()``),
``macro`` (``name!(..)``), ``expr`` (anything else called, e.g. ``(self.f)()``).
Calls inside macro token trees are found by scanning tokens (``in_macro``).
``cfg`` lists ``#[cfg(P)]`` predicates as ``P`` and ``#[cfg_attr(P, ..)]`` as
``cfg_attr:P``; ``features`` are the ``feature = "x"`` names found in either.
In ``bounds``, ``param`` is the generic parameter (or where-clause left side),
``Self`` for supertraits, ``impl:{arg}`` for ``impl Trait`` arguments.

Recovery: items that tree-sitter could not build (their tokens sit loose in an
ERROR node) are rebuilt from the keyword and a brace count, with
``recovered=True``. Any input that is valid UTF-8 without NUL bytes yields a
result; nothing else raises.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import blake3
import tree_sitter
import tree_sitter_rust

__all__ = ["extract", "FileFacts", "NotUtf8Error", "BinaryFileError"]

_LANGUAGE = tree_sitter.Language(tree_sitter_rust.language())
_PARSER = tree_sitter.Parser(_LANGUAGE)

# One query over the whole tree: the C side does the traversal, Python only
# touches the captured nodes (a Python walk of every node costs as much as the
# parse itself).
_QUERY = tree_sitter.Query(_LANGUAGE, """
[(function_item) (function_signature_item) (struct_item) (enum_item) (enum_variant)
 (union_item) (trait_item) (impl_item) (mod_item) (const_item) (static_item)
 (type_item) (associated_type) (macro_definition) (foreign_mod_item)
 (use_declaration) (extern_crate_declaration)] @item
(macro_invocation) @mac
(call_expression) @call
(type_identifier) @ty
(scoped_type_identifier) @sty
[(struct_item name: (_) @skip) (enum_item name: (_) @skip) (union_item name: (_) @skip)
 (trait_item name: (_) @skip) (type_item name: (_) @skip)
 (associated_type name: (_) @skip) (type_binding name: (_) @skip)
 (scoped_type_identifier name: (_) @skip)]
(type_parameter name: (_) @tparam)
(abstract_type) @abs
(inner_attribute_item) @iattr
(line_comment inner: (_)) @idoc
(block_comment inner: (_)) @idoc
""")

_KIND = {
    "function_item": "fn", "function_signature_item": "fn", "struct_item": "struct",
    "enum_item": "enum", "enum_variant": "variant", "union_item": "union",
    "trait_item": "trait", "impl_item": "impl", "mod_item": "mod",
    "const_item": "const", "static_item": "static", "type_item": "type",
    "associated_type": "type", "macro_definition": "macro_rules",
    "foreign_mod_item": "extern_block", "use_declaration": "use",
    "extern_crate_declaration": "use", "macro_invocation": "macro_call",
}
# Child node types that are an item's `{ ... }` body (the signature stops there).
_BODY_TYPES = frozenset(("block", "declaration_list", "field_declaration_list",
                         "enum_variant_list"))
# Keywords that start an item; used to rebuild items from ERROR regions.
_RECOVER_KW = {"fn": "fn", "struct": "struct", "enum": "enum", "union": "union",
               "trait": "trait", "impl": "impl", "mod": "mod", "const": "const",
               "static": "static", "type": "type", "macro_rules!": "macro_rules",
               "macro_rules": "macro_rules"}
_ITEM_PREFIX_TOKENS = frozenset(("pub", "visibility_modifier", "unsafe", "async",
                                 "const", "extern", "default", "function_modifiers",
                                 "extern_modifier"))

_FEATURE_RE = re.compile(r'feature\s*=\s*"([^"]*)"')
_WS_RE = re.compile(r"\s+")
_TURBOFISH_RE = re.compile(r"::<")

_IDENT = rb"(?:r\#)?[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*"
_GENERIC = rb"(?:::\s*<[^;{}()]*?>\s*)?"
# Token scan of macro token trees: literals and comments are matched first so
# that `"foo(bar)"` never yields a call.
_TT_RE = re.compile(
    rb"(?P<skip>b?r(?P<h>\#*)\".*?\"(?P=h)|b?\"(?:[^\"\\]|\\.)*\""
    rb"|b?'(?:[^'\\\n]|\\[^'\n]{1,10})'|//[^\n]*|/\*.*?\*/)"
    rb"|\.\s*(?P<meth>" + _IDENT + rb")\s*" + _GENERIC + rb"\("
    rb"|(?<![A-Za-z0-9_\x80-\xff.$])(?P<path>(?:" + _IDENT + rb"\s*" + _GENERIC
    + rb"::\s*)*)(?P<name>" + _IDENT + rb")\s*" + _GENERIC + rb"(?P<open>\(|!\s*[(\[{])",
    re.S)
_NOT_CALLEES = frozenset((
    "if", "while", "match", "return", "in", "for", "loop", "fn", "let", "as", "mut",
    "ref", "move", "else", "unsafe", "async", "await", "impl", "dyn", "where",
    "break", "continue", "yield", "box", "static", "const", "struct", "enum", "type",
    "use", "mod", "trait", "pub", "self", "super", "crate", "extern", "union"))
_RECV_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:?!")


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


def extract(rel_path: str, data: bytes) -> FileFacts:
    """Parse one Rust file and return its items and raw edge facts."""
    if b"\x00" in data:
        raise BinaryFileError(rel_path)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUtf8Error(rel_path) from None
    tree = _PARSER.parse(data)
    return _FileExtractor(rel_path, data, tree.root_node).run()


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _strip_turbofish(path: str) -> str:
    """`Vec::<u8>::new` -> `Vec::new`; `<T as Tr>::f` is kept (not a turbofish)."""
    while True:
        m = _TURBOFISH_RE.search(path)
        if not m:
            return path
        depth, i = 0, m.start() + 2
        while i < len(path):
            c = path[i]
            if c == "<":
                depth += 1
            elif c == ">":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        path = path[:m.start()] + path[i + 1:]


_SPACE_PUNCT_RE = re.compile(r"\s*([^\w\s])\s*")


def _compact(text: str) -> str:
    if " " not in text and "\n" not in text and "\t" not in text:
        return text
    return _SPACE_PUNCT_RE.sub(r"\1", _collapse(text))


def _last_segment(path: str) -> str:
    return path.rsplit("::", 1)[-1]


class _Item:
    """One extracted item while the file is processed."""

    __slots__ = ("node", "kind", "start", "end", "attrs", "docs", "recovered",
                 "name", "seg", "parent", "level", "id", "item_path", "is_test",
                 "cfg", "params", "inner_docs", "header_end")

    def __init__(self, node, kind, start, end, attrs, docs, recovered=False):
        self.node = node
        self.kind = kind
        self.start = start          # includes leading attributes / doc comments
        self.end = end
        self.attrs = attrs          # attribute_item nodes, source order
        self.docs = docs            # doc comment nodes, source order
        self.recovered = recovered  # rebuilt from an ERROR region
        self.name = ""
        self.seg = ""
        self.parent = None
        self.level = 1
        self.id = ""
        self.item_path = ""
        self.is_test = False
        self.cfg = None
        self.params = None          # generic type parameter names (set) or None
        self.inner_docs = None      # `//!` / `#![...]` nodes inside the item
        self.header_end = None      # recovered items: where the signature stops


class _FileExtractor:
    def __init__(self, rel_path: str, data: bytes, root):
        self.rel = rel_path
        self.data = data
        self.root = root
        self.facts = FileFacts()
        self.items: list[_Item] = []
        self.err_nodes: list = []
        self.err_starts: list[int] = []
        self.err_ends: list[int] = []
        self.missing: list[int] = []
        self.missing_owner: list[tuple] = []
        self.seen_ids: dict[str, int] = {}
        self.bounds_at: list[int] = []   # owner lookup: segment starts ...
        self.owner_at: list = []         # ... and the innermost item (or None = file)

    # ---------------------------------------------------------------- helpers
    def text(self, node) -> str:
        return self.data[node.start_byte:node.end_byte].decode("utf-8", "replace")

    def text_ws(self, node) -> str:
        """Node text without layout whitespace (paths): `a :: b` -> `a::b`,
        but `<T as Tr>::f` keeps its spaces between words."""
        return _compact(self.data[node.start_byte:node.end_byte].decode("utf-8", "replace"))

    def owner(self, pos: int):
        i = bisect_right(self.bounds_at, pos) - 1
        return self.owner_at[i] if i >= 0 else None

    # ------------------------------------------------------------------- run
    def run(self) -> FileFacts:
        caps = tree_sitter.QueryCursor(_QUERY).captures(self.root)
        if self.root.has_error:
            self._collect_errors()
        self._collect_items(caps)
        self._nest_items()
        self._attach_inner(caps)
        file_id = "file:" + self.rel
        file_test = self._file_is_test()
        self.file_test = file_test
        for it in self.items:
            self._item_facts(it, file_id)
        self.facts.nodes.insert(0, self._file_node(file_id, file_test))
        self._calls(caps, file_id)
        self._type_refs(caps, file_id)
        self._impl_trait_args(caps.get("abs", ()))
        f = self.facts
        f.parse_error_count = len(self.err_starts) + len(self.missing)
        f.error_spans = sorted([(s, e) for s, e in zip(self.err_starts, self.err_ends)]
                               + [(m, m) for m in self.missing])
        return f

    # ---------------------------------------------------------------- errors
    def _collect_errors(self):
        """Visit only subtrees that contain an error (has_error), iteratively."""
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
        lo = bisect_left(self.err_starts, start)
        hi = bisect_left(self.err_starts, end)
        ends = self.err_ends
        for i in range(lo, hi):
            if ends[i] <= end:
                n += 1
        return n

    # ----------------------------------------------------------------- items
    def _collect_items(self, caps):
        items = self.items
        for node in caps.get("item", ()):
            items.append(self._new_item(node, _KIND[node.type]))
        for node in caps.get("mac", ()):
            if self._is_item_level(node):
                items.append(self._new_item(node, "macro_call"))
        for err in self.err_nodes:
            self._recover_items(err)

    def _new_item(self, node, kind) -> _Item:
        attrs, docs, start = self._leading(node)
        return _Item(node, kind, start, node.end_byte, attrs, docs)

    def _leading(self, node):
        """Attributes and doc comments right before an item (they are siblings)."""
        attrs, docs = [], []
        start = node.start_byte
        data = self.data
        prev = node.prev_named_sibling
        while prev is not None:
            t = prev.type
            if t == "attribute_item":
                attrs.append(prev)
                start = prev.start_byte
            elif t == "line_comment" or t == "block_comment":
                s = prev.start_byte
                head = data[s:s + 4]
                if (head[:3] == b"///" and head != b"////") or (
                        head[:3] == b"/**" and head not in (b"/***", b"/**/")):
                    docs.append(prev)
                    start = s
                elif head[:3] in (b"//!", b"/*!"):
                    break  # inner doc of the enclosing module
                # a plain comment: look further, it is kept only if docs precede it
            else:
                break
            prev = prev.prev_named_sibling
        attrs.reverse()
        docs.reverse()
        return attrs, docs, start

    def _is_item_level(self, node) -> bool:
        """A macro invocation directly in a file, module, impl or trait body."""
        p = node.parent
        while p is not None and p.type == "ERROR" and p.parent is not None:
            p = p.parent
        return p is not None and (p.parent is None or p.type in ("source_file", "declaration_list"))

    def _recover_items(self, err):
        """Rebuild items whose tokens sit loose in an ERROR node.

        An item starts at an item keyword followed by a name; it ends at its
        matching `}` (brace count over the ERROR's children), at `;`, at a
        parsed body node, or at the end of the ERROR region.
        """
        kids = err.children
        n = len(kids)
        for i, k in enumerate(kids):
            kind = _RECOVER_KW.get(k.type)
            if kind is None or i + 1 >= n:
                continue
            nxt = kids[i + 1]
            if kind in ("const", "static") and nxt.type in ("fn", "function_modifiers", "unsafe",
                                                             "async", "extern", "extern_modifier"):
                continue  # `const fn` / `static` in `static mut` handled by the fn keyword
            if kind != "impl" and nxt.type not in ("identifier", "type_identifier",
                                                   "mutable_specifier"):
                continue
            name_node = nxt
            if nxt.type == "mutable_specifier" and i + 2 < n:
                name_node = kids[i + 2]
            # include visibility / qualifiers written before the keyword
            j = i
            while j > 0 and kids[j - 1].type in _ITEM_PREFIX_TOKENS:
                j -= 1
            start = kids[j].start_byte
            end, header_end = self._recovered_end(kids, i + 1, err.end_byte)
            attrs, docs, start2 = self._leading(kids[j])
            it = _Item(k, kind, start2, end, attrs, docs, recovered=True)
            it.name = self.text(name_node) if kind != "impl" else ""
            it.header_end = header_end if header_end is not None else end
            it.seg = start  # temporary: where the header text starts
            self.items.append(it)

    @staticmethod
    def _recovered_end(kids, i, err_end):
        depth = 0
        header_end = None
        for k in kids[i:]:
            t = k.type
            if depth == 0:
                if t in _BODY_TYPES:
                    return k.end_byte, (header_end if header_end is not None else k.start_byte)
                if t == ";":
                    return k.end_byte, (header_end if header_end is not None else k.start_byte)
                if header_end is None and (t in _KIND or t in _RECOVER_KW) and t not in ("mut",):
                    # another item starts before this one got a body: header only
                    return k.start_byte, k.start_byte
            if t == "{":
                if header_end is None:
                    header_end = k.start_byte
                depth += 1
            elif t == "}":
                depth -= 1
                if depth <= 0:
                    return k.end_byte, header_end
        return err_end, header_end

    def _nest_items(self):
        """Sort items, find parents with a span stack, and build the owner
        lookup: sorted segment starts -> innermost item covering them."""
        items = self.items
        items.sort(key=lambda it: (it.start, -it.end))
        stack: list[_Item] = []
        bounds_at, owner_at = self.bounds_at, self.owner_at
        for it in items:
            while stack and stack[-1].end <= it.start:
                done = stack.pop()
                bounds_at.append(done.end)
                owner_at.append(stack[-1] if stack else None)
            if stack and it.end > stack[-1].end:
                it.end = stack[-1].end  # a recovered span never crosses its parent
            it.parent = stack[-1] if stack else None
            it.level = it.parent.level + 1 if stack else 1
            bounds_at.append(it.start)
            owner_at.append(it)
            stack.append(it)
        while stack:
            done = stack.pop()
            bounds_at.append(done.end)
            owner_at.append(stack[-1] if stack else None)

    # ------------------------------------------------- attributes and docs
    def _attach_inner(self, caps):
        """`#![...]` and `//!` belong to the innermost enclosing item (or file)."""
        self.file_inner = []
        for name in ("iattr", "idoc"):
            for node in caps.get(name, ()):
                it = self.owner(node.start_byte)
                if it is None:
                    self.file_inner.append(node)
                elif it.inner_docs is None:
                    it.inner_docs = [node]
                else:
                    it.inner_docs.append(node)

    def _file_is_test(self) -> bool:
        parts = self.rel.split("/")
        if "tests" in parts[:-1] or parts[-1] == "tests.rs":
            return True
        return self._attr_info([], [], self.file_inner)[2]

    def _attr_info(self, attrs, docs, inner):
        """-> (cfg list, features, is_test, doc text, path attr)."""
        cfg, docs_out = [], []
        is_test = False
        path_attr = ""
        data = self.data
        nodes = attrs
        if inner:
            nodes = list(attrs) + [n for n in inner if n.type == "inner_attribute_item"]
            docs = list(docs) + [n for n in inner if n.type != "inner_attribute_item"]
        for a in nodes:
            s, e = a.start_byte, a.end_byte
            body = data[s:e].decode("utf-8", "replace")
            body = body[3:-1] if body.startswith("#!") else body[2:-1]
            name, _, rest = body.strip().partition("(")
            name = name.strip()
            if rest and name in ("cfg", "cfg_attr"):
                pred = rest.rsplit(")", 1)[0].strip()
                if name == "cfg":
                    cfg.append(_collapse(pred))
                    if _is_test_cfg(pred):
                        is_test = True
                else:
                    cfg.append("cfg_attr:" + _collapse(_first_arg(pred)))
                continue
            key, eq, value = body.partition("=")
            key = key.strip()
            if eq and key in ("doc", "path"):
                value = _string_value(value)
                if key == "doc":
                    docs_out.append((s, value))
                else:
                    path_attr = value
            elif key in ("test", "bench") or key.endswith("::test"):
                is_test = True
        for d in docs:
            docs_out.append((d.start_byte, _doc_text(data[d.start_byte:d.end_byte])))
        doc = ""
        if docs_out:
            docs_out.sort()
            doc = "\n".join(t for _, t in docs_out).strip()
        features = []
        for c in cfg:
            if "feature" in c:
                for f in _FEATURE_RE.findall(c):
                    if f not in features:
                        features.append(f)
        return cfg, features, is_test, doc, path_attr

    # ------------------------------------------------------------ node facts
    def _item_facts(self, it: _Item, file_id: str):
        parent = it.parent
        parent_id = parent.id if parent else file_id
        self.pending_impl = self.pending_uses = None
        self.pending_generics = (None, None)
        if it.recovered:
            sig, vis, gen, where, name, seg = self._recovered_details(it)
        else:
            sig, vis, gen, where, name, seg = self._details(it)
        it.name = name
        # ids: parents come first (sorted), so their final segment is known
        item_path = parent.item_path + "::" + seg if parent else seg
        iid = it.kind + ":" + self.rel + "::" + item_path
        seen = self.seen_ids
        if iid in seen:
            seen[iid] += 1
            seg = seg + "~" + str(seen[iid])
            item_path = parent.item_path + "::" + seg if parent else seg
            iid = it.kind + ":" + self.rel + "::" + item_path
            seen[iid] = 1
        else:
            seen[iid] = 1
        it.seg, it.item_path, it.id = seg, item_path, iid
        self._kind_facts(it, parent_id, vis)

        cfg, features, is_test, doc, path_attr = self._attr_info(it.attrs, it.docs, it.inner_docs)
        it.is_test = is_test or (parent.is_test if parent else self.file_test)
        s, e = it.start, it.end
        raw = self.data[s:e]
        node = it.node
        if it.recovered or e != node.end_byte:
            line_start = self.data.count(b"\n", 0, s) + 1
            line_end = line_start + raw.count(b"\n", 0, max(len(raw) - 1, 0))
        else:
            first = node
            if s != node.start_byte:
                first = min(it.attrs[:1] + it.docs[:1], key=lambda n: n.start_byte)
            line_start = first.start_point.row + 1
            line_end = node.end_point.row + 1
        errs = self._errors_within(s, e) if self.err_starts or self.missing else 0
        if it.recovered and errs == 0:
            errs = 1
        self.facts.nodes.append((
            iid, self.rel, it.kind, name, item_path, parent_id, it.level, sig, vis, gen,
            where, cfg, features, it.is_test, doc, s, e, line_start, line_end, errs,
            blake3.blake3(raw).hexdigest(), it.recovered or errs > 0))
        self.facts.code.append((iid, raw.decode("utf-8", "replace")))
        if it.kind == "mod":
            inline = not it.recovered and node.child_by_field_name("body") is not None
            if it.recovered:
                inline = it.header_end < it.end
            self.facts.mods.append((iid, name, inline, path_attr))

    def _details(self, it: _Item):
        """-> (signature, visibility, generics, where_clause, name, segment)."""
        node = it.node
        data = self.data
        kind = it.kind
        vis = gen = ""
        where = body = tparams = eq = None
        for ch in node.children:
            t = ch.type
            if t == "visibility_modifier":
                vis = self.text(ch)
            elif t == "type_parameters":
                tparams = ch
            elif t == "where_clause":
                where = ch
            elif t in _BODY_TYPES:
                if body is None:
                    body = ch
            elif t == "=":
                eq = ch
        start = node.start_byte
        if kind in ("const", "static", "variant") and eq is not None:
            sig_end = eq.start_byte
        elif body is not None and kind != "variant":
            sig_end = body.start_byte
        else:
            sig_end = node.end_byte
        sig = _collapse(data[start:sig_end].decode("utf-8", "replace"))
        if sig.endswith(";"):
            sig = sig[:-1].rstrip()
        if tparams is not None:
            gen = self.text(tparams)
        where_txt = _collapse(self.text(where)) if where is not None else ""

        if kind == "impl":
            hdr_end = where.start_byte if where is not None else (
                body.start_byte if body is not None else node.end_byte)
            seg = "<" + _collapse(data[start:hdr_end].decode("utf-8", "replace")) + ">"
            name = seg
            self._impl_fact(it, node, seg)
        elif kind == "use":
            name = seg = self._use_facts(it, node, vis)
        elif kind == "extern_block":
            name = seg = "<" + _collapse(data[start:sig_end].decode("utf-8", "replace")) + ">"
        elif kind == "macro_call":
            mac = node.child_by_field_name("macro")
            name = seg = self.text_ws(mac) if mac is not None else "<missing>"
            sig = name + "!"
        elif kind == "macro_rules":
            nn = node.child_by_field_name("name")
            name = seg = self.text(nn) if nn is not None else "<missing>"
            sig = "macro_rules! " + name
        else:
            nn = node.child_by_field_name("name")
            name = self.text(nn) if nn is not None else ""
            seg = name or "<missing>"
        self.pending_generics = (tparams, where)
        return sig, vis, gen, where_txt, name, seg

    def _recovered_details(self, it: _Item):
        hdr = _collapse(self.data[it.seg:it.header_end].decode("utf-8", "replace"))
        hdr = hdr.rstrip("{;").rstrip()
        vis = ""
        m = re.match(r"pub(\s*\([^)]*\))?", hdr)
        if m:
            vis = m.group(0).replace(" ", "")
        if it.kind == "impl":
            name = seg = "<" + hdr + ">"
        else:
            name = it.name
            seg = name or "<missing>"
        return hdr, vis, "", "", name, seg

    def _kind_facts(self, it, parent_id, vis):
        """Facts that need the item id: impls, uses, bounds."""
        f = self.facts
        if self.pending_impl is not None:
            f.impls.append((it.id,) + self.pending_impl)
        if self.pending_uses:
            for path, name, alias, glob in self.pending_uses:
                f.uses.append((parent_id, it.id, path, name, alias, glob, vis))
        tparams, where = self.pending_generics
        if tparams is not None or where is not None or (
                not it.recovered and it.kind in ("trait", "type")):
            self._bounds(it, it.node, tparams, where)

    # ------------------------------------------------------ generic bounds
    def _bounds(self, it, node, tparams, where):
        out = self.facts.bounds
        iid = it.id
        if tparams is not None:
            params = set()
            for p in tparams.named_children:
                t = p.type
                if t == "type_parameter" or t == "constrained_type_parameter" \
                        or t == "optional_type_parameter":
                    n = p.child_by_field_name("name") or p.child_by_field_name("left")
                    if n is None:
                        continue
                    pname = self.text(n)
                    params.add(pname)
                    b = p.child_by_field_name("bounds")
                    if b is not None:
                        self._emit_bounds(out, iid, pname, b)
            it.params = params
        if where is not None:
            for pred in where.named_children:
                if pred.type != "where_predicate":
                    continue
                left = pred.child_by_field_name("left")
                b = pred.child_by_field_name("bounds")
                if left is None or b is None or left.type == "lifetime":
                    continue
                if left.type == "higher_ranked_trait_bound":
                    left = left.child_by_field_name("type") or left
                self._emit_bounds(out, iid, _collapse(self.text(left)), b)
        if it.kind == "trait" or node.type == "associated_type":
            b = node.child_by_field_name("bounds")
            if b is not None:
                param = "Self" if it.kind == "trait" else it.seg
                self._emit_bounds(out, iid, param, b)

    def _emit_bounds(self, out, iid, param, bounds_node):
        for b in bounds_node.named_children:
            entry = self._bound_entry(b)
            if entry is not None:
                out.append((iid, param, entry[0], entry[1]))

    def _bound_entry(self, b):
        """A trait bound node -> (path without generics, last segment)."""
        prefix = ""
        t = b.type
        if t == "removed_trait_bound":
            prefix = "?"
            b = b.named_child(0)
        elif t == "higher_ranked_trait_bound":
            b = b.child_by_field_name("type")
        elif t == "tuple_type" and b.named_child_count == 1:
            b = b.named_child(0)
        if b is None:
            return None
        t = b.type
        if t in ("lifetime", "line_comment", "block_comment", "use_bounds"):
            return None
        if t == "function_type":
            b = b.child_by_field_name("trait")
        elif t == "generic_type":
            b = b.child_by_field_name("type")
        if b is None:
            return None
        path = self.text_ws(b)
        return prefix + path, prefix + _last_segment(path)

    def _impl_trait_args(self, abs_nodes):
        """`fn f(x: impl Tr)`: a bound on the anonymous parameter `impl:x`."""
        out = self.facts.bounds
        for a in abs_nodes:
            p = a.parent
            while p is not None and p.type in ("reference_type", "pointer_type", "bounded_type"):
                p = p.parent
            if p is None or p.type != "parameter":
                continue
            owner = self.owner(a.start_byte)
            if owner is None:
                continue
            pat = p.child_by_field_name("pattern")
            param = "impl:" + (self.text_ws(pat) if pat is not None else "_")
            tr = a.child_by_field_name("trait")
            if tr is None:
                continue
            parts = tr.named_children if tr.type == "bounded_type" else [tr]
            for b in parts:
                entry = self._bound_entry(b)
                if entry is not None:
                    out.append((owner.id, param, entry[0], entry[1]))

    # --------------------------------------------------------- impls, uses
    def _impl_fact(self, it, node, seg):
        trait = node.child_by_field_name("trait")
        self_ty = node.child_by_field_name("type")
        tpath = tname = ""
        if trait is not None:
            tpath, tname = self._type_path(trait)
            prev = trait.prev_sibling
            if prev is not None and prev.type == "!":
                tpath, tname = "!" + tpath, "!" + tname
        spath, sname = self._type_path(self_ty) if self_ty is not None else ("", "")
        self.pending_impl = (tpath, tname, spath, sname)

    def _type_path(self, node):
        """Type node -> (path without generics or references, last segment)."""
        while node.type in ("reference_type", "pointer_type"):
            inner = node.child_by_field_name("type")
            if inner is None:
                break
            node = inner
        if node.type == "generic_type":
            node = node.child_by_field_name("type") or node
        path = self.text_ws(node)
        return path, _last_segment(path)

    def _use_facts(self, it, node, vis) -> str:
        """Expand a use tree into one row per imported name; returns the segment."""
        if node.type == "extern_crate_declaration":
            nn = node.child_by_field_name("name")
            al = node.child_by_field_name("alias")
            name = self.text(nn) if nn is not None else ""
            alias = self.text(al) if al is not None else ""
            self.pending_uses = [(name, alias or name, alias, False)]
            return "<extern crate " + name + (" as " + alias if alias else "") + ">"
        arg = node.child_by_field_name("argument")
        rows = []
        if arg is not None:
            stack = [(arg, "")]
            while stack:
                n, prefix = stack.pop()
                t = n.type
                if t == "use_list":
                    for ch in reversed(n.named_children):
                        stack.append((ch, prefix))
                elif t == "scoped_use_list":
                    p = n.child_by_field_name("path")
                    lst = n.child_by_field_name("list")
                    pre = _join(prefix, self.text_ws(p)) if p is not None else prefix
                    if lst is not None:
                        stack.append((lst, pre))
                elif t == "use_as_clause":
                    p = n.child_by_field_name("path")
                    al = n.child_by_field_name("alias")
                    alias = self.text(al) if al is not None else ""
                    ptxt = self.text_ws(p) if p is not None else ""
                    full = prefix if ptxt == "self" else _join(prefix, ptxt)
                    rows.append((full, alias or _last_segment(full), alias, False))
                elif t == "use_wildcard":
                    base = self.text_ws(n)[:-1]
                    if base.endswith("::"):
                        base = base[:-2]
                    rows.append((_join(prefix, base), "*", "", True))
                elif t in ("identifier", "scoped_identifier", "self", "super", "crate",
                           "metavariable"):
                    ptxt = self.text_ws(n)
                    full = prefix if ptxt == "self" and prefix else _join(prefix, ptxt)
                    rows.append((full, _last_segment(full), "", False))
        self.pending_uses = rows
        return "<use " + (_collapse(self.text(arg)) if arg is not None else "") + ">"

    # ------------------------------------------------------------ file node
    def _file_node(self, file_id, is_test):
        data = self.data
        cfg, features, _, doc, _ = self._attr_info([], [], self.file_inner)
        stem = self.rel.rsplit("/", 1)[-1]
        if stem.endswith(".rs"):
            stem = stem[:-3]
        end = self.root.end_point
        line_end = end.row + 1 if end.column > 0 else max(end.row, 1)
        errs = len(self.err_starts) + len(self.missing)
        return (file_id, self.rel, "file", stem, "", "", 0, "", "", "", "", cfg, features,
                is_test, doc, 0, len(data), 1, line_end, errs,
                blake3.blake3(data).hexdigest(), errs > 0)

    # ------------------------------------------------------------------ calls
    def _calls(self, caps, file_id):
        out = self.facts.calls
        data = self.data
        owner = self.owner
        for call in caps.get("call", ()):
            f = call.child(0)
            if f is None:
                continue
            ft = f.type
            if ft == "generic_function":  # foo::<T>() / x.foo::<T>()
                f = f.child_by_field_name("function") or f
                ft = f.type
            recv = ""
            if ft == "field_expression":
                fld = f.child_by_field_name("field")
                val = f.child_by_field_name("value")
                if fld is None:
                    continue
                name = path = self.text(fld)
                kind = "method"
                if val is not None:
                    vs = val.start_byte
                    recv = _collapse(data[vs:min(val.end_byte, vs + 400)]
                                     .decode("utf-8", "ignore"))[:80]
            elif ft == "identifier":
                name = path = self.text(f)
                kind = "plain"
            elif ft == "scoped_identifier":
                path = self.text_ws(f)
                if "<" in path:
                    path = _strip_turbofish(path)
                name = _last_segment(path)
                kind = "path"
            else:
                path = _collapse(self.text(f))[:80]
                name = ""
                kind = "expr"
            s = call.start_byte
            it = owner(s)
            out.append((it.id if it else file_id, path, name, recv, kind, s, call.end_byte,
                        call.start_point.row + 1, False))
        for mac in caps.get("mac", ()):
            s = mac.start_byte
            it = owner(s)
            caller = it.id if it else file_id
            m = mac.child_by_field_name("macro")
            if m is not None:
                path = self.text_ws(m)
                out.append((caller, path, _last_segment(path), "", "macro", s, mac.end_byte,
                            mac.start_point.row + 1, False))
            tt = mac.child(mac.child_count - 1)
            if tt is not None and tt.type == "token_tree":
                self._scan_tokens(tt, caller, out)

    def _scan_tokens(self, tt, caller, out):
        """Calls inside a macro token tree: `a::b(`, `x.m(`, `f(`, `m!(`."""
        data = self.data
        lo, hi = tt.start_byte, tt.end_byte
        line, last = tt.start_point.row + 1, lo
        for m in _TT_RE.finditer(data, lo, hi):
            if m.group("skip") is not None:
                continue
            ms = m.start()
            line += data.count(b"\n", last, ms)
            last = ms
            meth = m.group("meth")
            if meth is not None:
                name = meth.decode("utf-8", "replace")
                recv = _receiver(data, ms, lo)
                out.append((caller, name, name, recv, "method", ms, m.end(), line, True))
                continue
            name = m.group("name").decode("utf-8", "replace")
            prefix = m.group("path")
            if prefix:
                path = "".join(prefix.decode("utf-8", "replace").split())
                if "<" in path:
                    path = _strip_turbofish(path)
                path += name
            else:
                if name in _NOT_CALLEES or data[max(lo, ms - 8):ms].rstrip().endswith(b"fn"):
                    continue
                path = name
            kind = "macro" if m.group("open")[:1] == b"!" else ("path" if prefix else "plain")
            out.append((caller, path, name, "", kind, ms, m.end(), line, True))

    # -------------------------------------------------------------- type refs
    def _type_refs(self, caps, file_id):
        skip = {n.start_byte for n in caps.get("skip", ())}
        for n in caps.get("tparam", ()):
            skip.add(n.start_byte)
        out = self.facts.type_refs
        seen = set()
        data = self.data
        owner = self.owner
        for n in caps.get("ty", ()):
            s = n.start_byte
            if s in skip:
                continue
            name = data[s:n.end_byte].decode("utf-8", "replace")
            if name == "Self":
                continue
            it = owner(s)
            if it is not None and _is_param(it, name):
                continue
            iid = it.id if it else file_id
            key = (iid, name)
            if key not in seen:
                seen.add(key)
                out.append((iid, name, name, s))
        for n in caps.get("sty", ()):
            s = n.start_byte
            path = self.text_ws(n)
            if path.startswith("Self::"):
                continue
            it = owner(s)
            iid = it.id if it else file_id
            key = (iid, path)
            if key not in seen:
                seen.add(key)
                out.append((iid, path, _last_segment(path), s))


def _owner_span(node):
    """Span of the nearest enclosing item node (or the root)."""
    p = node.parent
    while p is not None and p.type not in _KIND and p.parent is not None:
        p = p.parent
    if p is None:
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
    """Receiver text before `.name(` in a token tree (balanced brackets, no spaces
    except around a chained `.`), at most 80 chars."""
    i = dot
    floor = max(lo + 1, dot - 400)
    depth = 0
    while i > floor:
        c = data[i - 1]
        if c in b")]}":
            depth += 1
        elif c in b"([{":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and c not in _RECV_CHARS:
            if c in b" \t\r\n" and data[i] == 46:  # whitespace before a chained `.`
                pass
            else:
                break
        i -= 1
    return _collapse(data[i:dot].decode("utf-8", "ignore"))[:80]


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + "::" + path


def _is_test_cfg(pred: str) -> bool:
    """`cfg(test)` or `cfg(all(test, ..))`; `not(test)` / `any(test, ..)` are not."""
    pred = pred.replace(" ", "")
    if pred == "test":
        return True
    return pred.startswith("all(") and "not(" not in pred and "any(" not in pred and \
        re.search(r"[(,]test[),]", pred) is not None


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
    """The value of `= "..."` in an attribute (escapes \\n, \\", \\\\ handled)."""
    text = text.strip()
    if text.startswith("r"):
        text = text.lstrip("r#")
        return text.rstrip("#")[1:-1] if len(text) >= 2 else ""
    if len(text) >= 2 and text[0] == '"':
        body = text[1:text.rfind('"')] if text.rfind('"') > 0 else text[1:]
        return body.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
    return text


def _doc_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if text.startswith("///") or text.startswith("//!"):
        text = text[3:].rstrip("\r\n")
        return text[1:] if text.startswith(" ") else text
    # /** ... */ or /*! ... */
    text = text[3:-2] if text.endswith("*/") else text[3:]
    lines = []
    for ln in text.splitlines():
        ln = ln.strip()
        if ln.startswith("*"):
            ln = ln[1:].lstrip() if not ln.startswith("**") else ln
        lines.append(ln)
    return "\n".join(lines).strip()
