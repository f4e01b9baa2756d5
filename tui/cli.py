"""`hush`: the terminal UI (no arguments) and scriptable subcommands.

Exit status: 0 success; 1 the request failed (the daemon said why); 2 bad usage or an invalid
policy; 3 blocked by the policy (`hush policy test`); 69 the daemon is not running or cannot be
reached (EX_UNAVAILABLE, as in sysexits.h); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hush.daemon import __version__, paths
from hush.daemon.client import Client
from hush.daemon.config import DEFAULT_MODEL
from hush.daemon.errors import DaemonUnavailable, HushError

if TYPE_CHECKING:
    from hush.daemon.engine.model_info import ModelInfo

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE

EPILOG = """exit status:
  0    success
  1    the request failed; the reason is on stderr
  2    bad usage, or (hush policy) an invalid policy file
  3    hush policy test: the text is blocked by the policy
  69   the daemon is not running or cannot be reached (start it with `hushd`)
  130  interrupted
"""


def _add_socket(p: argparse.ArgumentParser, *, default: object) -> None:
    p.add_argument("--socket", type=Path, default=default,
                   help="daemon socket (default: $HUSH_SOCKET, else "
                   "$XDG_RUNTIME_DIR/hush/hushd.sock, else $TMPDIR/hush-UID/hushd.sock)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hush", description="Talk to your private assistant. With no command, opens the "
        "terminal UI.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_socket(p, default=None)
    p.add_argument("--version", action="version", version=f"hush {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_socket(c, default=argparse.SUPPRESS)
        return c

    ask = command("ask", "send one prompt (argument or stdin) and stream the answer")
    ask.add_argument("prompt", nargs="?", help="the prompt; read from stdin when omitted")
    ask.add_argument("--json", action="store_true", help="print the daemon's events as JSON lines")
    ask.add_argument("--max-tokens", type=int, default=512)
    ask.add_argument("--system", help="system prompt for this request")
    ask.add_argument("--temperature", type=float, default=0.0)
    ask.add_argument("--repetition-penalty", type=float, metavar="P",
                     help="above 1 discourages repeating (default: hushd.yaml's, else the "
                          "model's measured one; 1 turns it off)")
    ask.add_argument("--seed", type=int)
    ask.add_argument("--conversation", metavar="ID",
                     help="continue this conversation (see `hush history list`)")

    history = command("history", "list, show, search, export or delete your conversations")
    hsub = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    hlist = hsub.add_parser("list", help="your conversations, newest first")
    hlist.add_argument("--limit", type=int, default=50)
    hlist.add_argument("--json", action="store_true")
    hshow = hsub.add_parser("show", help="print a conversation")
    hshow.add_argument("id")
    hexport = hsub.add_parser("export", help="export a conversation to stdout")
    hexport.add_argument("id")
    hexport.add_argument("--format", choices=["markdown", "json"], default="markdown")
    hsearch = hsub.add_parser("search", help="search your conversations (decrypted in memory)")
    hsearch.add_argument("query")
    hsearch.add_argument("--json", action="store_true")
    hdelete = hsub.add_parser("delete", help="crypto-shred a conversation")
    hdelete.add_argument("id")
    hrename = hsub.add_parser("rename", help="give a conversation a new title")
    hrename.add_argument("id")
    hrename.add_argument("title")

    policy = command("policy", "check, test or show data policies")
    psub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    pcheck = psub.add_parser("check", help="validate a policy file (no daemon needed)")
    pcheck.add_argument("file", type=Path)
    ptest = psub.add_parser(
        "test", help="print TEXT as a direction would pass it on (exit 3 when blocked)")
    ptest.add_argument("text")
    ptest.add_argument("--policy", type=Path,
                       help="evaluate this file locally instead of the daemon's policy")
    ptest.add_argument("--direction",
                       choices=["input", "output", "storage", "documents", "export"])
    psub.add_parser("show", help="print the daemon's active merged policy and its version")

    command("unlock", "unlock a passphrase-protected store (the passphrase is read from "
            "the terminal, or stdin when piped)")
    keys = command("keys", "manage the key-encryption key")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    rotate = ksub.add_parser("rotate", help="rewrap every data key under a new key")
    rotate.add_argument("--passphrase", action="store_true",
                        help="protect the store with a passphrase from now on (asked for)")

    summ = command("summarize", "summarize documents (text, Markdown, HTML, PDF) on the device")
    summ.add_argument("files", nargs="+", type=Path, metavar="FILE")
    summ.add_argument("--length", choices=["short", "medium", "long"], default="short")
    summ.add_argument("--bullets", action="store_true", help="answer as a bulleted list")
    summ.add_argument("--json", action="store_true", help="print the daemon's events")

    status = command("status", "show what the daemon is doing")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the daemon to come up")

    model = command("model", "manage models (pull, import, list, remove)")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pull = msub.add_parser("pull", help="fetch a catalog model and import it; without a "
                           "name, the best one that fits this machine's memory, made the "
                           "default")
    pull.add_argument("name", nargs="?")
    pull.add_argument("--name", dest="install_as", metavar="NAME",
                      help="name to install it under (default: the catalog name)")
    imp = msub.add_parser("import", help="import a local GGUF file (no network)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", help="name to install it under (default: the file's stem)")
    imp.add_argument("--quantization", default="int8",
                     choices=["int8", "int8_float32", "int16", "float32"])
    for importer in (pull, imp):
        importer.add_argument("--vocab", type=int, metavar="N",
                         help="keep only N vocabulary entries: a smaller LM head decodes "
                              "faster, at a measured cost in quality (docs/benchmarks.md)")
        importer.add_argument("--corpus", type=Path, action="append", default=[], metavar="FILE",
                         help="with --vocab: text in your languages; its tokens are kept "
                              "first (repeatable)")
    msub.add_parser("list", help="list installed models")
    use = msub.add_parser("use", help="make a model the default (and switch a running daemon)")
    use.add_argument("name")
    rm = msub.add_parser("remove", help="delete an installed model")
    rm.add_argument("name")
    probe = msub.add_parser("probe", help="measure the fastest thread count for a model again")
    probe.add_argument("name")
    return p


def fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"hush: {message}", file=sys.stderr)
    return status


async def ask(socket: Path, args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    if not prompt.strip():
        return fail("nothing to ask: give a prompt as an argument or on stdin", EXIT_USAGE)
    params: dict[str, Any] = {
        "message": prompt,
        "options": {"max_tokens": args.max_tokens, "temperature": args.temperature},
    }
    if args.seed is not None:
        params["options"]["seed"] = args.seed
    if args.repetition_penalty is not None:
        params["options"]["repetition_penalty"] = args.repetition_penalty
    if args.system:
        params["system"] = args.system
    if args.conversation:
        params["conversation"] = args.conversation
    async with await Client.connect(socket) as client:
        out = sys.stdout
        async for event in client.request("chat", params):
            if args.json:
                out.write(json.dumps(event, ensure_ascii=False) + "\n")
            elif event["type"] == "token":
                out.write(event["text"])
            out.flush()
        if not args.json:
            out.write("\n")
    return 0


async def summarize(socket: Path, args: argparse.Namespace) -> int:
    from .documents import send_document

    failures = 0
    async with await Client.connect(socket) as client:
        for path in args.files:
            try:
                document = await send_document(client, path)
            except OSError as exc:
                failures += 1
                print(f"hush: cannot read {path}: {exc.strerror}", file=sys.stderr)
                continue
            params = {"document": document, "length": args.length, "bullets": args.bullets}
            bar = _ProgressBar(path.name) if sys.stderr.isatty() and not args.json else None
            try:
                async for event in client.request("summarize", params):
                    if args.json:
                        print(json.dumps(event, ensure_ascii=False), flush=True)
                    elif event["type"] == "progress" and bar is not None:
                        bar.show(event["done"], event["total"], event["eta_s"])
                    elif event["type"] == "policy" and event["notice"]:
                        print(f"hush: {path.name}: {event['notice']}", file=sys.stderr)
                    elif event["type"] == "done":
                        if bar is not None:
                            bar.clear()
                        result = event.get("result", {})
                        if len(args.files) > 1:
                            print(f"## {path.name}\n")
                        print(result["summary"].strip() + "\n")
            except HushError as exc:
                if bar is not None:
                    bar.clear()
                if exc.code == "unavailable":
                    raise
                failures += 1
                print(f"hush: {path}: {exc.message}", file=sys.stderr)
    return EXIT_FAILED if failures else 0


class _ProgressBar:
    """One self-rewriting line on stderr, for people; scripts get nothing."""

    def __init__(self, name: str) -> None:
        self.name = name[:30]

    def show(self, done: int, total: int, eta: float | None) -> None:
        width = 30
        filled = int(width * done / total) if total else 0
        left = f", about {eta:.0f} s left" if eta is not None else ""
        sys.stderr.write(f"\r{self.name} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{total}{left}\x1b[K")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


async def history(socket: Path, args: argparse.Namespace) -> int:
    action = args.history_command
    async with await Client.connect(socket) as client:
        if action == "list":
            result = await client.call("conversations.list", {"limit": args.limit})
            if args.json:
                print(json.dumps(result["conversations"], indent=2, ensure_ascii=False))
            for c in [] if args.json else result["conversations"]:
                title = c["title"] if c["error"] is None else f"(unreadable: {c['error']})"
                print(f"{c['id']}  {_when(c['updated'])}  {c['message_count']:>3} msgs  {title}")
        elif action == "show":
            conversation = await client.call("conversations.get", {"id": args.id})
            print(f"# {conversation['title'] or 'Conversation'}\n")
            for m in conversation["messages"]:
                body = m["content"] if m["error"] is None else f"(unreadable: {m['error']})"
                print(f"{(m['role'] or '?').upper()}: {body}\n")
            for failure in conversation["failures"]:
                print(f"hush: {failure}", file=sys.stderr)
            if conversation["failures"]:
                return EXIT_FAILED
        elif action == "export":
            result = await client.call("conversations.export",
                                       {"id": args.id, "format": args.format})
            sys.stdout.write(result["text"])
        elif action == "search":
            hits = (await client.call("conversations.search", {"query": args.query}))["hits"]
            if args.json:
                print(json.dumps(hits, indent=2, ensure_ascii=False))
            for hit in [] if args.json else hits:
                print(f"{hit['conversation_id']}  {hit['title'] or ''}: {hit['snippet']}")
        elif action == "delete":
            await client.call("conversations.delete", {"id": args.id})
            print(f"{args.id}: deleted")
        elif action == "rename":
            await client.call("conversations.rename", {"id": args.id, "title": args.title})
            print(f"{args.id}: renamed")
    return 0


def policy_local(args: argparse.Namespace) -> int | None:
    """The policy actions that need no daemon; None when the daemon must answer."""
    from hush.daemon.policy import load_policy_file
    from hush.daemon.policy.tools import EXIT_INVALID, render_test

    if args.policy_command == "check":
        try:
            policy = load_policy_file(args.file)
        except HushError as exc:
            print(exc.message, file=sys.stderr)
            return EXIT_INVALID
        print(f"{args.file}: valid (policy {policy.name}, version {policy.version})")
        return 0
    if args.policy_command == "test" and args.policy is not None:
        try:
            policy = load_policy_file(args.policy)
        except HushError as exc:
            print(exc.message, file=sys.stderr)
            return EXIT_INVALID
        out, status = render_test(policy, args.text, args.direction)
        sys.stdout.write(out)
        return status
    return None


async def policy(socket: Path, args: argparse.Namespace) -> int:
    async with await Client.connect(socket) as client:
        if args.policy_command == "show":
            result = await client.call("policy.show")
            sys.stdout.write(result["yaml"])
            if result["error"]:
                print(f"hush: the last reload failed, the policy above stays in force:\n"
                      f"{result['error']}", file=sys.stderr)
            return 0
        params: dict[str, Any] = {"text": args.text}
        if args.direction:
            params["direction"] = args.direction
        result = await client.call("policy.test", params)
        sys.stdout.write(result["output"])
        status: int = result["exit_status"]
        return status


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\n")


async def unlock(socket: Path, _args: argparse.Namespace) -> int:
    passphrase = _read_secret("Passphrase: ")
    async with await Client.connect(socket) as client:
        await client.call("unlock", {"passphrase": passphrase})
    print("unlocked")
    return 0


async def keys(socket: Path, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.passphrase:
        first = _read_secret("New passphrase: ")
        if sys.stdin.isatty() and _read_secret("Again: ") != first:
            return fail("the passphrases differ; nothing changed", EXIT_USAGE)
        params["passphrase"] = first
    async with await Client.connect(socket) as client:
        result = await client.call("keys.rotate", params)
    print(f"rotated: data keys are now wrapped by {result['key_source']}")
    return 0


async def status(socket: Path, args: argparse.Namespace) -> int:
    deadline = asyncio.get_running_loop().time() + args.wait
    while True:
        try:
            async with await Client.connect(socket) as client:
                result = await client.call("status")
            break
        except DaemonUnavailable:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if isinstance(value, dict):  # e.g. fast_paths: one line per path
                for sub, item in value.items():
                    print(f"{key + '.' + sub:>22}: {item}")
            else:
                print(f"{key:>22}: {value}")
    return 0


def _progress(message: str) -> None:
    # Long work (download, import, probe) says what it is doing, but only to a person.
    if sys.stderr.isatty():
        print(f"hush: {message}", file=sys.stderr, flush=True)


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _finish_import(name: str, model_dir: Path) -> None:
    from hush.daemon.engine.probe import probe_threads

    _progress(f"measuring decode speed per thread count for {name}")
    choice = probe_threads(model_dir)
    speeds = ", ".join(
        f"{n}: {v:.1f} tok/s alone, {choice.aggregate_tokens_per_s.get(n, 0.0):.1f} in batches"
        for n, v in choice.tokens_per_s.items())
    _progress(f"{name}: {choice.intra_threads} thread(s) x {choice.decode_workers} worker(s) "
              f"chosen ({speeds})")
    _check_agreement(name, model_dir, choice.intra_threads)


def _check_agreement(name: str, model_dir: Path, threads: int) -> None:
    """Measure how often the int8 model predicts the float32 reference's next token, and say
    so when it is below the bar (the import stands: it is still the model asked for)."""
    from hush.daemon.engine.convert import agreement
    from hush.daemon.engine.generator import Engine

    engine = Engine.load(model_dir, intra_threads=threads)
    try:
        fraction = agreement.measure(model_dir, engine.generator)
    finally:
        engine.close()
    if fraction is not None and fraction < agreement.BAR:
        print(f"hush: warning: {name} agrees with the float32 model of its GGUF on "
              f"{fraction:.1%} of next tokens, below the {agreement.BAR:.0%} bar: int8 "
              "rounding changes some answers (docs/benchmarks.md)", file=sys.stderr)


def _describe(info: ModelInfo) -> str:
    pruned = f", vocabulary pruned from {info.pruned_from:,}" if info.pruned_from else ""
    return f"{info.architecture}, {info.quantization}{pruned}"


def _print_catalog(installed: set[str]) -> None:
    """The catalog with what was measured (docs/benchmarks.md): quality on the held-out quiz,
    speed through hushd, and the machine memory each needs; `>` marks this machine's pick."""
    from hush.daemon.engine import catalog

    memory = catalog.machine_memory_mb()
    pick = catalog.best_fit(memory).name
    print(f"catalog (this machine: {memory / 1024:.1f} GB; measured on a 2-core Intel Xeon)")
    print(f"  {'NAME':<22} {'DOWNLOAD':>9} {'NEEDS':>8} {'QUIZ':>6} {'TOK/S':>6}  STATE")
    for entry in catalog.CATALOG.values():
        m = entry.measured
        download = _human_size(entry.size) if entry.size else "-"
        needs = f"{m.needed_memory_mb / 1024:.1f} GB" if m else "-"
        quiz = f"{m.quiz_right}/{catalog.QUIZ_QUESTIONS}" if m else "-"
        speed = f"{m.decode_tok_s:.0f}" if m else "-"
        state = "installed" if entry.name in installed else ""
        if m is None:
            state = (state + ", " if state else "") + "completion only, never picked"
        elif m.needed_memory_mb > memory:
            state = (state + ", " if state else "") + "too big for this machine"
        mark = ">" if entry.name == pick else " "
        print(f"{mark} {entry.name:<22} {download:>9} {needs:>8} {quiz:>6} {speed:>6}  {state}")


def model_command(socket: Path, args: argparse.Namespace) -> int:
    from hush.daemon.engine import catalog
    from hush.daemon.engine.convert import agreement
    from hush.daemon.engine.convert.gguf_import import VocabPruning, import_gguf
    from hush.daemon.engine.convert.pull import pull
    from hush.daemon.engine.probe import needs_probe
    from hush.daemon.engine.tokenizer import read_kept

    layout = paths.CacheLayout.default()
    config_dir = paths.default_config_dir()

    if args.model_command in ("pull", "import"):
        if args.corpus and args.vocab is None:
            return fail("--corpus chooses which tokens --vocab keeps; give --vocab N too",
                        EXIT_USAGE)
        try:
            corpus = tuple(p.read_text(encoding="utf-8", errors="replace") for p in args.corpus)
        except OSError as exc:
            return fail(f"cannot read the corpus file {exc.filename}: {exc.strerror}",
                        EXIT_USAGE)
        prune = VocabPruning(args.vocab, corpus) if args.vocab is not None else None
    if args.model_command == "pull":
        chosen = args.name is None
        current = paths.chosen_model(config_dir)
        if chosen and current in catalog.installed(layout.models):
            # `hush model use` (or an earlier plain pull) chose it: a plain pull keeps it.
            print(f"{current}: installed, the default")
            return 0
        if chosen:
            memory = catalog.machine_memory_mb()
            args.name = catalog.best_fit(memory).name
            print(f"{args.name}: the best measured model for this machine's "
                  f"{memory / 1024:.1f} GB of memory (`hush model list` compares them)",
                  file=sys.stderr)
        name = args.install_as or args.name
        info = pull(args.name, layout.models, layout.downloads, _progress,
                            install_as=name, prune=prune)
        if chosen:
            paths.choose_model(config_dir, name)
        # A new model, or one whose thread measurement is missing or was made on another
        # OpenMP runtime (an upgrade from a Hush that ran on libgomp).
        if needs_probe(layout.models / name):
            _finish_import(name, layout.models / name)
        print(f"{name}: ready ({_describe(info)}){', now the default' if chosen else ''}")
    elif args.model_command == "import":
        name = args.name or args.file.stem
        dest = layout.models / name
        if dest.exists():
            return fail(f"a model named {name!r} is already installed; choose another --name "
                        f"or `hush model remove {name}` first")
        layout.models.mkdir(parents=True, exist_ok=True)
        _progress(f"importing {args.file} as {name} ({args.quantization})")
        info = import_gguf(args.file, dest, quantization=args.quantization, prune=prune)
        _finish_import(name, dest)
        print(f"{name}: ready ({_describe(info)})")
    elif args.model_command == "list":
        models = catalog.installed(layout.models)
        _print_catalog(set(models))
        if not models:
            print("no models installed; `hush model pull` picks one for this machine",
                  file=sys.stderr)
            return 0
        print()
        default = paths.chosen_model(config_dir) or DEFAULT_MODEL
        print(f"  {'NAME':<22} {'ARCH':<8} {'PARAMS':>7} {'SIZE':>9} {'CONTEXT':>7} "
              f"{'QUANT':<12} {'VOCAB':<15} {'AGREES':<16} TEMPLATE")
        for name, info in models.items():
            size = sum(f.stat().st_size for f in (layout.models / name).iterdir() if f.is_file())
            mark = "*" if name == default else " "
            kept = read_kept(layout.models / name)
            vocab = "all" if kept is None else f"{len(kept)}/{info.pruned_from}"
            agrees = agreement.recorded(layout.models / name)
            agreed = "-" if agrees is None else f"{agrees:.1%}" + (
                " (below bar)" if agrees < agreement.BAR else "")
            print(f"{mark} {name:<22} {info.architecture:<8} "
                  f"{info.parameter_count / 1e6:>6.0f}M {_human_size(size):>9} "
                  f"{info.context_length:>7} {info.quantization:<12} {vocab:<15} "
                  f"{agreed:<16} {'yes' if info.chat_template else 'no (completion)'}")
    elif args.model_command == "use":
        if args.name not in catalog.installed(layout.models):
            return fail(f"model {args.name!r} is not installed; run `hush model pull "
                        f"{args.name}` or `hush model import FILE.gguf --name {args.name}`")
        paths.choose_model(config_dir, args.name)
        try:
            asyncio.run(_switch_daemon(socket, args.name))
            print(f"{args.name}: now the default, and the running daemon serves it")
        except DaemonUnavailable:
            print(f"{args.name}: now the default (the daemon will use it when it starts)")
    elif args.model_command == "remove":
        catalog.remove(args.name, layout.models)
        print(f"{args.name}: removed")
    elif args.model_command == "probe":
        if args.name not in catalog.installed(layout.models):
            return fail(f"model {args.name!r} is not installed")
        _finish_import(args.name, layout.models / args.name)
    return 0


async def _switch_daemon(socket: Path, name: str) -> None:
    async with await Client.connect(socket) as client:
        await client.call("models.use", {"name": name})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    socket: Path = args.socket or paths.default_socket()
    try:
        if args.command is None:
            from .app import HushApp

            HushApp(socket).run()
            return 0
        if args.command == "model":
            return model_command(socket, args)
        if args.command == "policy" and (local := policy_local(args)) is not None:
            return local
        runner = {"ask": ask, "status": status, "history": history, "unlock": unlock,
                  "keys": keys, "policy": policy, "summarize": summarize}[args.command]
        return asyncio.run(runner(socket, args))
    except DaemonUnavailable as exc:
        return fail(exc.message, EXIT_UNAVAILABLE)
    except HushError as exc:
        return fail(exc.message)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
