"""``python -m server users …``: operator accounts and API tokens from the command line,
on the same database the server uses (it may be running: every request reads the store, so
a revoked token or deleted account stops working at once).

    python -m server users add NAME --role admin|operator|viewer   (asks for the password)
    python -m server users list
    python -m server users passwd NAME
    python -m server users delete NAME
    python -m server users token create NAME --role ROLE   (prints the token once)
    python -m server users token list
    python -m server users token revoke ID

``--password-stdin`` reads the password from one line of standard input (for scripts).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from server.accounts import CLI_CREATOR, ROLES, AccountError, Accounts
from server.config import load_config
from server.store import open_store


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server users", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML configuration file (also PICOCHARGE_CONFIG)")
    p.add_argument("--data-dir", help="directory of the database (default var)")
    p.add_argument("--db", help="SQLite database path (default <data-dir>/picocharge.db)")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create an account")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--password-stdin", action="store_true")
    sub.add_parser("list", help="list accounts")
    passwd = sub.add_parser("passwd", help="set an account's password (ends its sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    role = sub.add_parser("role", help="change an account's role")
    role.add_argument("username")
    role.add_argument("role", choices=ROLES)
    delete = sub.add_parser("delete", help="delete an account and its sessions")
    delete.add_argument("username")
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command",
                                                                     required=True)
    create = token.add_parser("create", help="create a token; printed once")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, default="viewer")
    token.add_parser("list", help="list tokens (never their secret)")
    revoke = token.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    return p


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError(400, "the passwords differ")
    return first


def _run(args, accounts: Accounts) -> None:
    if args.command == "add":
        user = accounts.add_user(args.username, args.role, _password(args))
        print(f"created {user['username']} ({user['role']})")
    elif args.command == "list":
        for user in accounts.users():
            print(f"{user['username']}\t{user['role']}")
    elif args.command == "passwd":
        accounts.update_user(args.username, password=_password(args))
        print(f"password of {args.username} changed; its sessions are closed")
    elif args.command == "role":
        accounts.update_user(args.username, role=args.role)
        print(f"{args.username} is now {args.role}")
    elif args.command == "delete":
        accounts.delete_user(args.username)
        print(f"deleted {args.username}")
    elif args.token_command == "create":
        info, secret = accounts.create_token(args.name, args.role, created_by=CLI_CREATOR)
        print(f"token {info['id']} ({info['role']}); shown only now:\n{secret}")
    elif args.token_command == "list":
        for token in accounts.tokens():
            state = "active" if token["active"] else "revoked"
            print(f"{token['id']}\t{token['role']}\t{state}\t{token['name']}")
    elif args.token_command == "revoke":
        accounts.revoke_token(args.id)
        print(f"revoked {args.id}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    overrides = {}
    if args.data_dir:
        overrides["server.data_dir"] = args.data_dir
    if args.db:
        overrides["store.path"] = args.db
    try:
        config = load_config(args.config, overrides=overrides)
    except (OSError, KeyError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(config)
    try:
        _run(args, Accounts(store, config.auth["session_hours"]))
    except AccountError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
