"""Render a Helm 3 chart with the subset of Go text/template and Sprig that helm/callwaiting-tts uses.

No helm binary can be installed here (none on PyPI, Debian or npm), so tests/test_helm.py renders the chart
with this module and validates what comes out. It implements exactly the subset below, the way Helm does,
and raises HelmTemplateError on anything else (at parse time for unknown functions and keywords, even in
branches a test does not take), so the chart cannot silently drift outside what the tests check.

Syntax
  {{ }} actions, {{- and -}} trimming (all adjacent spaces, tabs and newlines), {{/* comments */}}
  literals: "strings" (\\n \\t \\" \\\\ escapes), `raw strings`, integers, floats, true, false, nil
  .Field.Chain on dot, $ and $variables; $x := pipeline and $x = pipeline
  pipelines: a b | c d (the previous result is the last argument); (parenthesised pipelines) as arguments
  if / else if / else / end; with / else / end; range over lists and maps (maps in sorted key order, as Go),
  with `range $v :=` or `range $k, $v :=`, and else; define (top level only); template "name" pipeline
Objects
  .Values (values.yaml deep-merged with overrides; a null override removes a key, as in Helm),
  .Release.Name/Namespace/Service/IsInstall/IsUpgrade/Revision,
  .Chart.Name/Version/AppVersion/Description (from Chart.yaml), .Template.Name/BasePath
Functions (Sprig/Helm semantics, including argument types: an int parameter refuses a float)
  and or not eq ne (Go's: comparing an int literal with a number from values is an error, as in Helm)
  default required include print printf(%s %d %v %q %%) quote toString toYaml indent nindent trunc
  trimSuffix contains replace b64enc sha256sum list has fail add
Helm behaviour kept
  numbers from values are float64: `{{ .Values.n }}` prints 1000000 as 1e+06, like Helm does;
  a missing map key is nil and prints as nothing; a field of nil is an error; with strict=True a missing
  map key is an error too (helm lint --strict); files whose name starts with "_" are helpers, not output;
  NOTES.txt is rendered separately. toYaml writes the same data as Helm's (sorted keys, integral floats as
  integers), through PyYAML, so quoting style may differ.
"""
import base64
import copy
import hashlib
import re
from decimal import Decimal
from pathlib import Path

import yaml


class HelmTemplateError(Exception):
    pass


class _Struct(dict):
    """A Go struct (.Release, .Chart, .Template): asking for a field it lacks is an error, unlike a map."""


# --- Go value formatting --------------------------------------------------------------------------------------
def _go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64), which fmt's %v uses: exponent form from 1e+06 and below 1e-04."""
    if value != value or value in (float("inf"), float("-inf")):
        raise HelmTemplateError(f"printing {value} is not supported")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    point = digits_tuple.exponent + len(digits)  # digits[:point] is the integer part
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_string(value) -> str:
    """fmt.Sprint of one value, as templates print it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise HelmTemplateError(f"printing a {type(value).__name__} is not supported: use toYaml")


def _go_quote(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _truth(value) -> bool:
    if value is None:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return True


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    raise HelmTemplateError(f"comparing a {type(value).__name__} is not supported")


def _expect(value, kind: type, function: str):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HelmTemplateError(
            f"{function}: wrong type for value; expected {kind.__name__}; got {type(value).__name__} {value!r}"
        )
    return value


def _to_yaml_data(value):
    """What sigs.k8s.io/yaml writes: floats that are whole numbers come out as integers."""
    if isinstance(value, dict):
        return {str(key): _to_yaml_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_yaml_data(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


# --- functions --------------------------------------------------------------------------------------------
def _eq(first, *others):
    if not others:
        raise HelmTemplateError("eq: missing argument for comparison")
    for other in others:
        if first is None or other is None:
            if first is None and other is None:
                raise HelmTemplateError("eq: comparing nil with nil is not supported")
            continue
        if _kind(first) != _kind(other):
            raise HelmTemplateError(f"eq: incompatible types for comparison: {first!r} and {other!r}")
        if first == other:
            return True
    return False


def _ne(first, second):
    return not _eq(first, second)


def _empty(value) -> bool:
    return not _truth(value)


def _default(fallback, *given):
    return fallback if not given or _empty(given[0]) else given[0]


def _required(message, value):
    _expect(message, str, "required")
    if value is None or value == "":
        raise HelmTemplateError(f"required: {message}")
    return value


def _strval(value) -> str:
    return value if isinstance(value, str) else _go_string(value)


def _quote(*values):
    return " ".join(_go_quote(_strval(value)) for value in values if value is not None)


def _print(*values):
    out = ""
    for index, value in enumerate(values):
        if index and not isinstance(value, str) and not isinstance(values[index - 1], str):
            out += " "
        out += _go_string(value)
    return out


def _printf(format_string, *args):
    _expect(format_string, str, "printf")
    args = list(args)

    def substitute(match):
        verb = match.group(1)
        if verb == "%":
            return "%"
        if not args:
            raise HelmTemplateError(f"printf {format_string!r}: missing argument for %{verb}")
        value = args.pop(0)
        if verb == "s":
            return _expect(value, str, f"printf %s in {format_string!r}")
        if verb == "d":
            return str(_expect(value, int, f"printf %d in {format_string!r}"))
        if verb == "q":
            return _go_quote(_expect(value, str, f"printf %q in {format_string!r}"))
        return _go_string(value)

    out = re.sub(r"%(.)", lambda m: substitute(m) if m.group(1) in "sdvq%" else _unsupported_verb(m), format_string)
    if args:
        raise HelmTemplateError(f"printf {format_string!r}: {len(args)} extra argument(s)")
    return out


def _unsupported_verb(match):
    raise HelmTemplateError(f"printf verb %{match.group(1)} is not supported")


def _to_yaml(value):
    if value is None:
        return "null"
    return yaml.safe_dump(_to_yaml_data(value), default_flow_style=False, sort_keys=True, width=1 << 30).rstrip("\n")


def _indent(spaces, text):
    _expect(spaces, int, "indent")
    pad = " " * spaces
    return pad + _expect(text, str, "indent").replace("\n", "\n" + pad)


def _nindent(spaces, text):
    return "\n" + _indent(spaces, text)


def _trunc(length, text):
    _expect(length, int, "trunc")
    _expect(text, str, "trunc")
    if length < 0:
        return text[length:] if len(text) + length > 0 else text
    return text[:length]


def _trim_suffix(suffix, text):
    _expect(suffix, str, "trimSuffix")
    _expect(text, str, "trimSuffix")
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


def _contains(needle, haystack):
    return _expect(needle, str, "contains") in _expect(haystack, str, "contains")


def _replace(old, new, text):
    return _expect(text, str, "replace").replace(_expect(old, str, "replace"), _expect(new, str, "replace"))


def _has(needle, haystack):
    if not isinstance(haystack, list):
        raise HelmTemplateError(f"has: {haystack!r} is not a list")
    return any(type(item) is type(needle) and item == needle for item in haystack)  # reflect.DeepEqual


def _fail(message):
    raise HelmTemplateError(f"fail: {_expect(message, str, 'fail')}")


def _add(*values):
    total = 0
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HelmTemplateError(f"add: {value!r} is not a number")
        total += int(value)
    return total


FUNCTIONS = {
    "eq": _eq,
    "ne": _ne,
    "not": lambda value: not _truth(value),
    "default": _default,
    "required": _required,
    "print": _print,
    "printf": _printf,
    "quote": _quote,
    "toString": _strval,
    "toYaml": _to_yaml,
    "indent": _indent,
    "nindent": _nindent,
    "trunc": _trunc,
    "trimSuffix": _trim_suffix,
    "contains": _contains,
    "replace": _replace,
    "b64enc": lambda text: base64.b64encode(_expect(text, str, "b64enc").encode()).decode(),
    "sha256sum": lambda text: hashlib.sha256(_expect(text, str, "sha256sum").encode()).hexdigest(),
    "list": lambda *items: list(items),
    "has": _has,
    "fail": _fail,
    "add": _add,
}
_LAZY = {"and", "or", "include"}  # evaluated by the renderer: short-circuit, or need the templates
KNOWN_FUNCTIONS = set(FUNCTIONS) | _LAZY
_UNSUPPORTED_KEYWORDS = {"block", "break", "continue"}


# --- lexing ---------------------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<declare>:=)
  | (?P<punct>[()|=,])
    """,
    re.VERBOSE,
)
_SPACE = " \t\r\n"


def _space_at(source: str, index: int) -> bool:
    return index < len(source) and source[index] in _SPACE


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def _unescape(body: str, where: str) -> str:
    def one(match):
        char = match.group(1)
        if char not in _ESCAPES:
            raise HelmTemplateError(f"{where}: string escape \\{char} is not supported")
        return _ESCAPES[char]

    return re.sub(r"\\(.)", one, body)


def _lex_action(source: str, start: int, where: str):
    """Tokens of the action whose body starts at `start`; returns (tokens, index after }}, trim right)."""
    tokens = []
    position = start
    while True:
        spaced = position
        while position < len(source) and source[position] in _SPACE:
            position += 1
        if source.startswith("-}}", position) and position > spaced:
            return tokens, position + 3, True
        if source.startswith("}}", position):
            return tokens, position + 2, False
        if position >= len(source):
            raise HelmTemplateError(f"{where}: unclosed action")
        match = _TOKEN.match(source, position)
        if not match:
            raise HelmTemplateError(f"{where}: unsupported syntax at {source[position:position + 20]!r}")
        kind = match.lastgroup
        text = match.group()
        if kind == "field" and tokens and tokens[-1] == ("punct", ")") and position == spaced:
            raise HelmTemplateError(f"{where}: a field of a parenthesised pipeline is not supported")
        if kind == "string":
            tokens.append(("literal", _unescape(text[1:-1], where)))
        elif kind == "raw":
            tokens.append(("literal", text[1:-1]))
        elif kind == "number":
            tokens.append(("literal", float(text) if re.search(r"[.eE]", text) else int(text)))
        elif kind == "ident" and text in ("true", "false", "nil"):
            tokens.append(("literal", {"true": True, "false": False, "nil": None}[text]))
        else:
            tokens.append((kind, text))
        position = match.end()


def _lex(source: str, name: str):
    """Text pieces and actions (lists of tokens), with trimming applied."""
    items = []
    position = 0
    trim_next = False
    while True:
        opening = source.find("{{", position)
        text = source[position:] if opening < 0 else source[position:opening]
        if trim_next:
            text = text.lstrip(_SPACE)
        if opening < 0:
            items.append(("text", text))
            return items
        body = opening + 2
        if source.startswith("-", body) and _space_at(source, body + 1):
            text = text.rstrip(_SPACE)
            body += 2
        items.append(("text", text))
        where = f"{name}:{source.count(chr(10), 0, opening) + 1}"
        if source.startswith("/*", body):
            end = source.find("*/", body)
            if end < 0:
                raise HelmTemplateError(f"{where}: unclosed comment")
            position = end + 2
            trim_next = _space_at(source, position) and source.startswith("-}}", position + 1)
            if not (trim_next or source.startswith("}}", position)):
                raise HelmTemplateError(f"{where}: comment ends before closing delimiter")
            position += 4 if trim_next else 2
            continue
        tokens, position, trim_next = _lex_action(source, body, where)
        if not tokens:
            raise HelmTemplateError(f"{where}: empty action")
        items.append(("action", tokens, where))


# --- parsing --------------------------------------------------------------------------------------------------
class _Tokens:
    def __init__(self, tokens, where):
        self.tokens = tokens
        self.index = 0
        self.where = where

    def peek(self, offset=0):
        index = self.index + offset
        return self.tokens[index] if index < len(self.tokens) else (None, None)

    def take(self):
        token = self.peek()
        self.index += 1
        return token

    def error(self, message):
        return HelmTemplateError(f"{self.where}: {message}")


def _parse_operand(stream: _Tokens):
    kind, text = stream.take()
    if kind == "literal":
        return ("literal", text)
    if kind == "field":
        return ("field", ".", [part for part in text.split(".") if part])
    if kind == "var":
        name, *chain = text.split(".")
        return ("field", name, chain)
    if kind == "ident":
        if text not in KNOWN_FUNCTIONS:
            raise stream.error(f"function {text!r} is not supported by tests/helm_render.py")
        return ("function", text)
    if (kind, text) == ("punct", "("):
        pipeline = _parse_pipeline(stream, allow_declaration=False)
        if stream.take() != ("punct", ")"):
            raise stream.error("missing )")
        return ("pipeline", pipeline)
    raise stream.error(f"unexpected {text!r}")


def _parse_pipeline(stream: _Tokens, *, allow_declaration=True, range_variables=False):
    declared, assign = [], False
    if allow_declaration and stream.peek()[0] == "var":
        names = [stream.peek()[1]]
        offset = 1
        if range_variables and stream.peek(1) == ("punct", ","):
            names.append(stream.peek(2)[1])
            offset = 3
        operator = stream.peek(offset)
        if operator[0] == "declare" or operator == ("punct", "="):
            if any("." in name for name in names):
                raise stream.error("cannot declare a field")
            declared, assign = names, operator == ("punct", "=")
            stream.index += offset + 1
    commands = [[]]
    while stream.peek()[0] is not None and stream.peek() != ("punct", ")"):
        if stream.peek() == ("punct", "|"):
            stream.take()
            commands.append([])
            continue
        commands[-1].append(_parse_operand(stream))
    if any(not command for command in commands):
        raise stream.error("missing command in pipeline")
    return {"declare": declared, "assign": assign, "commands": commands}


def _parse_whole_pipeline(stream: _Tokens, **options):
    pipeline = _parse_pipeline(stream, **options)
    if stream.peek()[0] is not None:
        raise stream.error(f"unexpected {stream.peek()[1]!r}")
    return pipeline


def _parse(items, name):
    """Tree of nodes; returns (nodes of the file's body, {define name: nodes})."""
    defines = {}
    position = 0

    def parse_list(stop: set, top_level=False):
        nonlocal position
        nodes = []
        while position < len(items):
            item = items[position]
            position += 1
            if item[0] == "text":
                if item[1]:
                    nodes.append(("text", item[1]))
                continue
            _, tokens, where = item
            stream = _Tokens(tokens, where)
            keyword = tokens[0][1] if tokens[0][0] == "ident" else None
            if keyword in _UNSUPPORTED_KEYWORDS:
                raise stream.error(f"{keyword} is not supported by tests/helm_render.py")
            if keyword in stop:
                return nodes, keyword, stream
            if keyword in ("else", "end"):
                raise stream.error(f"unexpected {keyword}")
            if keyword == "define":
                if not top_level:
                    raise stream.error("define must be at the top level")
                stream.take()
                kind, define_name = stream.take()
                if kind != "literal" or stream.peek()[0] is not None:
                    raise stream.error("define takes one string")
                body, _, _ = parse_list({"end"})
                defines[define_name] = body
            elif keyword == "template":
                stream.take()
                kind, template_name = stream.take()
                if kind != "literal" or not isinstance(template_name, str):
                    raise stream.error("template takes a constant name")
                pipeline = _parse_whole_pipeline(stream) if stream.peek()[0] is not None else None
                nodes.append(("template", template_name, pipeline, where))
            elif keyword == "if":
                stream.take()
                branches = [(_parse_whole_pipeline(stream), None)]
                else_body = []
                while True:
                    body, ended, tail = parse_list({"else", "end"})
                    branches[-1] = (branches[-1][0], body)
                    if ended == "end":
                        break
                    tail.take()
                    if tail.peek() == ("ident", "if"):
                        tail.take()
                        branches.append((_parse_whole_pipeline(tail), None))
                        continue
                    if tail.peek()[0] is not None:
                        raise tail.error("only `else` and `else if` are supported")
                    else_body, _, _ = parse_list({"end"})
                    break
                nodes.append(("if", branches, else_body, where))
            elif keyword in ("with", "range"):
                stream.take()
                pipeline = _parse_whole_pipeline(stream, range_variables=keyword == "range")
                if keyword == "with" and pipeline["declare"]:
                    raise stream.error("with $x := is not supported")
                body, ended, tail = parse_list({"else", "end"})
                else_body = []
                if ended == "else":
                    tail.take()
                    if tail.peek()[0] is not None:
                        raise tail.error(f"only a plain `else` is supported in {keyword}")
                    else_body, _, _ = parse_list({"end"})
                nodes.append((keyword, pipeline, body, else_body, where))
            else:
                nodes.append(("action", _parse_whole_pipeline(stream), where))
        if stop:
            raise HelmTemplateError(f"{name}: missing {{{{ end }}}}")
        return nodes, None, None

    body, _, _ = parse_list(set(), top_level=True)
    return body, defines


# --- evaluation -----------------------------------------------------------------------------------------------
class _Scope:
    def __init__(self, root):
        self.frames = [{"$": root}]

    def push(self):
        self.frames.append({})

    def pop(self):
        self.frames.pop()

    def declare(self, name, value):
        self.frames[-1][name] = value

    def assign(self, name, value, where):
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise HelmTemplateError(f"{where}: undefined variable {name}")

    def get(self, name, where):
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise HelmTemplateError(f"{where}: undefined variable {name}")


class Renderer:
    def __init__(self, templates: dict[str, list], defines: dict[str, list], *, strict: bool):
        self.templates = templates
        self.named = {**templates, **defines}
        self.strict = strict

    def execute(self, name: str, data, where="") -> str:
        if name not in self.named:
            raise HelmTemplateError(f"{where}: no template named {name!r}")
        out = []
        self._run(self.named[name], data, _Scope(data), out)
        return "".join(out)

    def _run(self, nodes, dot, scope, out):
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                value = self._pipeline(node[1], dot, scope, node[2])
                if not node[1]["declare"]:
                    out.append("" if value is None else _go_string(value))
            elif kind == "template":
                _, name, pipeline, where = node
                data = self._pipeline(pipeline, dot, scope, where) if pipeline else None
                out.append(self.execute(name, data, where))
            elif kind == "if":
                _, branches, else_body, where = node
                scope.push()
                try:
                    for pipeline, body in branches:
                        if _truth(self._pipeline(pipeline, dot, scope, where)):
                            self._run(body, dot, scope, out)
                            break
                    else:
                        self._run(else_body, dot, scope, out)
                finally:
                    scope.pop()
            elif kind == "with":
                _, pipeline, body, else_body, where = node
                scope.push()
                try:
                    value = self._pipeline(pipeline, dot, scope, where)
                    if _truth(value):
                        self._run(body, value, scope, out)
                    else:
                        self._run(else_body, dot, scope, out)
                finally:
                    scope.pop()
            elif kind == "range":
                self._range(node, dot, scope, out)

    def _range(self, node, dot, scope, out):
        _, pipeline, body, else_body, where = node
        names = pipeline["declare"]
        value = self._pipeline({**pipeline, "declare": []}, dot, scope, where)
        if isinstance(value, dict):
            pairs = [(key, value[key]) for key in sorted(value)]
        elif isinstance(value, list):
            pairs = list(enumerate(value))
        elif value is None:
            pairs = []
        else:
            raise HelmTemplateError(f"{where}: range over {type(value).__name__} is not supported")
        if not pairs:
            scope.push()
            try:
                self._run(else_body, dot, scope, out)
            finally:
                scope.pop()
            return
        for key, element in pairs:
            scope.push()
            try:
                if len(names) == 1:
                    scope.declare(names[0], element)
                elif len(names) == 2:
                    scope.declare(names[0], key)
                    scope.declare(names[1], element)
                self._run(body, element, scope, out)
            finally:
                scope.pop()

    def _pipeline(self, pipeline, dot, scope, where):
        value = None
        for index, command in enumerate(pipeline["commands"]):
            value = self._command(command, dot, scope, where, piped=index > 0, piped_value=value)
        names = pipeline["declare"]
        if names:
            if pipeline["assign"]:
                scope.assign(names[0], value, where)
            else:
                scope.declare(names[0], value)
        return value

    def _command(self, command, dot, scope, where, *, piped, piped_value):
        first = command[0]
        if first[0] != "function":
            if len(command) > 1 or piped:
                raise HelmTemplateError(f"{where}: can't give an argument to a non-function")
            return self._operand(first, dot, scope, where)
        name = first[1]
        thunks = [lambda operand=operand: self._operand(operand, dot, scope, where) for operand in command[1:]]
        if piped:
            thunks.append(lambda: piped_value)
        try:
            if name == "and":
                value = None
                for thunk in thunks:
                    value = thunk()
                    if not _truth(value):
                        return value
                return value
            if name == "or":
                value = None
                for thunk in thunks:
                    value = thunk()
                    if _truth(value):
                        return value
                return value
            args = [thunk() for thunk in thunks]
            if name == "include":
                if len(args) != 2:
                    raise HelmTemplateError("include takes a name and a value")
                return self.execute(_expect(args[0], str, "include"), args[1], where)
            return FUNCTIONS[name](*args)
        except TypeError as exc:
            raise HelmTemplateError(f"{where}: {name}: wrong number of arguments ({exc})") from None
        except HelmTemplateError as exc:
            if str(exc).startswith(where):
                raise
            raise HelmTemplateError(f"{where}: {exc}") from None

    def _operand(self, operand, dot, scope, where):
        kind = operand[0]
        if kind == "literal":
            return operand[1]
        if kind == "pipeline":
            return self._pipeline(operand[1], dot, scope, where)
        if kind == "function":  # a function name as an argument is a call without arguments
            return self._command([operand], dot, scope, where, piped=False, piped_value=None)
        _, base, chain = operand
        value = dot if base == "." else scope.get(base, where)
        walked = base if base != "." else ""
        for field in chain:
            walked += "." + field
            if isinstance(value, _Struct):
                if field not in value:
                    raise HelmTemplateError(f"{where}: can't evaluate field {field} ({walked})")
                value = value[field]
            elif isinstance(value, dict):
                if field not in value and self.strict:
                    raise HelmTemplateError(f"{where}: map has no entry for key {field!r} ({walked})")
                value = value.get(field)
            elif value is None:
                raise HelmTemplateError(f"{where}: nil pointer evaluating {walked}")
            else:
                raise HelmTemplateError(f"{where}: can't evaluate field {field} of a {type(value).__name__}")
        return value


# --- the chart ----------------------------------------------------------------------------------------------
def _as_helm_values(value):
    """Helm reads values through JSON: every number is a float64."""
    if isinstance(value, dict):
        return {key: _as_helm_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_helm_values(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def merge_values(base: dict, override: dict) -> dict:
    """Helm's coalescing of -f files: maps merge key by key, anything else replaces, null deletes."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render_chart(
    chart_dir,
    overrides: dict | None = None,
    *,
    release: str = "tts",
    namespace: str = "default",
    strict: bool = False,
    notes: bool = False,
) -> dict[str, str]:
    """{"<chart>/templates/<file>": rendered text} for every manifest file, as `helm template` renders them
    (files that render to nothing are left out); with notes=True, NOTES.txt alone."""
    chart_dir = Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    if chart.get("dependencies"):
        raise HelmTemplateError("chart dependencies are not supported")
    values = merge_values(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}, overrides or {})
    base_path = f"{chart['name']}/templates"
    sources = {
        f"{base_path}/{path.relative_to(chart_dir / 'templates').as_posix()}": path.read_text()
        for path in sorted((chart_dir / "templates").rglob("*"))
        if path.is_file()
    }
    templates, defines = {}, {}
    for name, source in sources.items():
        body, file_defines = _parse(_lex(source, name), name)
        templates[name] = body
        defines.update(file_defines)
    renderer = Renderer(templates, defines, strict=strict)
    root_values = {
        "Values": _as_helm_values(values),
        "Release": _Struct(
            Name=release, Namespace=namespace, Service="Helm", IsInstall=True, IsUpgrade=False, Revision=1
        ),
        "Chart": _Struct(
            Name=chart["name"],
            Version=chart["version"],
            AppVersion=chart.get("appVersion", ""),
            Description=chart.get("description", ""),
        ),
    }
    rendered = {}
    for name in templates:
        filename = name.rsplit("/", 1)[-1]
        if filename.startswith("_") or (filename == "NOTES.txt") != notes:
            continue
        root = _Struct(root_values, Template=_Struct(Name=name, BasePath=base_path))
        text = renderer.execute(name, root, name)
        if text.strip():
            rendered[name] = text
    return rendered
