"""
Typed configuration for the scripts: a dataclass of defaults, then config files, then --key=value.

    python train.py config/train_shakespeare_char.py --batch_size=32 --device=cpu

A config file is Python made of plain assignments (`batch_size = 64`, `lr = 1e-3 * 2`,
`name = 'x'`). It is parsed, never executed: values may be literals, arithmetic on numbers, and
names assigned above. Every line that is more (nanoGPT's config files are run, so they may import
and call) is named, all in one message, with what to write instead. Every value is checked against
the default's type, and an unknown key is an error naming the closest valid one.
"""

import ast
import difflib
import math
import operator
import sys
from dataclasses import fields, replace

from gptkit.base import UserError


class ConfigError(UserError):
    """A user mistake in a config file or a --key=value argument; the message says what to fix."""


_BINARY_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}


# no config value needs a larger number; bounding it keeps `2 ** 10 ** 10` from running forever
MAX_BITS = 256
MAX_LENGTH = 10_000  # likewise for repeated strings and tuples ("ab" * 10 ** 12)


def _check_size(op, left, right, where):
    """Refuse arithmetic whose result would be huge, before computing it."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    if op is ast.Pow and numbers and abs(left) > 1 and right > 0:
        if right * math.log2(abs(left)) > MAX_BITS:
            raise ConfigError(f"{where} is too large (over 2**{MAX_BITS})")
    if op is ast.Mult and not numbers:
        sequence, count = (left, right) if isinstance(left, (str, tuple)) else (right, left)
        if isinstance(count, int) and len(sequence) * count > MAX_LENGTH:
            raise ConfigError(f"{where} is too long (over {MAX_LENGTH:,} items)")


def _evaluate(node, names, where):
    """Evaluate a literal, a name assigned earlier, or arithmetic on those; nothing else runs."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, names, where)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _evaluate(node.left, names, where), _evaluate(node.right, names, where)
        _check_size(type(node.op), left, right, f"{where}: `{ast.unparse(node)}`")
        try:
            return _BINARY_OPS[type(node.op)](left, right)
        except (ArithmeticError, TypeError) as e:  # 1 / 0, 10.0 ** 400, "a" - 1, ...
            raise ConfigError(f"{where}: cannot compute `{ast.unparse(node)}` ({e})") from None
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_evaluate(e, names, where) for e in node.elts)
    raise ConfigError(
        f"{where}: only literals, arithmetic and names assigned above are allowed, "
        f"got `{ast.unparse(node)}`{_instead(node)}"
    )


def _instead(node):
    """What to write instead of a line or value a config file cannot hold (it is parsed, never
    run)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return ": delete it, a config file needs no modules"
    if isinstance(node, ast.Call):
        return ": calls are not run, write the value itself (a number or a 'string')"
    if isinstance(node, ast.Name):
        return f": assign {node.id} above it, or write its value"
    if (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.value is not None
    ):
        return f": write {node.target.id} = {ast.unparse(node.value)}"
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        return f": write {node.target.id} = <its value>"
    return ": write the value itself"


def read_config_file(path):
    """{key: value} from a file of plain assignments."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    values, problems = {}, []
    for stmt in tree.body:
        where = f"{path}:{stmt.lineno}"
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or a comment-like string
        try:
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                line = ast.unparse(stmt).splitlines()[0]
                raise ConfigError(
                    f"{where}: a config file holds only `key = value` lines, "
                    f"got `{line}`{_instead(stmt)}"
                )
            values[stmt.targets[0].id] = _evaluate(stmt.value, values, where)
        except ConfigError as e:  # go on: every line that cannot be taken is named, in one message
            problems.append(str(e))
    if problems:
        raise ConfigError("; ".join(problems))
    return values


def _accepted(field, default):
    """The types a key takes: its default's, or both for a field annotated `bool | str` (a switch
    that also takes a word, as compile="auto")."""
    return (bool, str) if str(field.type) == str(bool | str) else (type(default),)


def _parse_cli_value(text, expected):
    if bool in expected and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if str in expected:
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # type check below reports it


def _check_type(key, value, default, source, expected):
    if expected == (float,) and type(value) is int:
        return float(value)
    if type(value) not in expected:
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(
            f"{source}: {key}={value!r} should be {names}, like the default {default!r}"
        )
    return value


def _check_key(key, known, source):
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see --help for the keys"
        raise ConfigError(f"{source}: unknown config key {key!r}{hint}")


def parse_args(defaults, argv):
    """
    Merge config files and --key=value arguments (in order) onto the dataclass instance `defaults`.
    Returns a new instance; `defaults` is not changed.
    """
    return replace(defaults, **parse_overrides(defaults, argv))


def parse_overrides(defaults, argv):
    """
    {key: value} for the keys that config files and --key=value arguments set (type-checked, the
    last one wins): what the user asked for, as opposed to a default. train.py's resume check needs
    the difference.
    """
    known = {f.name: getattr(defaults, f.name) for f in fields(defaults)}
    accepted = {f.name: _accepted(f, known[f.name]) for f in fields(defaults)}
    overrides = {}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(usage(defaults))
            raise SystemExit(0)
        if not arg.startswith("--"):
            for key, value in read_config_file(arg).items():
                _check_key(key, known, arg)
                overrides[key] = _check_type(key, value, known[key], arg, accepted[key])
            continue
        key, sep, text = arg[2:].partition("=")
        _check_key(key, known, arg)
        if not sep:
            if not isinstance(known[key], bool):
                raise ConfigError(f"{arg}: give a value, as --{key}=VALUE")
            text = "True"
        value = _parse_cli_value(text, accepted[key])
        overrides[key] = _check_type(key, value, known[key], arg, accepted[key])
    return overrides


def usage(defaults):
    """The --help text: every key with its default."""
    script = sys.argv[0] if sys.argv else "script.py"
    lines = [
        f"usage: python {script} [config_file.py ...] [--key=value ...]",
        "",
        "keys and defaults:",
    ]
    lines += [f"  --{f.name}={getattr(defaults, f.name)!r}" for f in fields(defaults)]
    return "\n".join(lines)


def run_cli(main):
    """Run main(); a UserError prints one line `error: ...` and exits 2. Anything else is a bug: its
    traceback stays."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
