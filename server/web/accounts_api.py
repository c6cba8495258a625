"""``/api/v1/me``, ``/api/v1/users`` and ``/api/v1/tokens``: operator accounts and API
tokens, managed by an admin (roles: server/web/auth.py). A new token is in the answer to
its creation and nowhere else, ever."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.accounts import AccountError
from server.web.common import ApiError, error_response, json_body, services

accounts_api = Blueprint("accounts_api", __name__, url_prefix="/api/v1")


@accounts_api.errorhandler(AccountError)
def account_error(exc: AccountError):
    return error_response(exc.status, exc.reason)


@accounts_api.errorhandler(ApiError)
def api_error(exc: ApiError):
    return error_response(exc.status, exc.reason, **exc.extra)


@accounts_api.get("/me")
def me():
    principal = g.principal
    return jsonify(name=principal["name"], role=principal["role"], kind=principal["kind"])


@accounts_api.get("/users")
def list_users():
    return jsonify(services().accounts.users())


@accounts_api.post("/users")
def create_user():
    body = json_body()
    user = services().accounts.add_user(body.get("username"), body.get("role", "viewer"),
                                        body.get("password"))
    return jsonify(user), 201


@accounts_api.patch("/users/<username>")
def update_user(username: str):
    body = json_body()
    unknown = set(body) - {"role", "password"}
    if unknown:
        raise AccountError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    return jsonify(services().accounts.update_user(username, body.get("role"),
                                                   body.get("password")))


@accounts_api.delete("/users/<username>")
def delete_user(username: str):
    services().accounts.delete_user(username)
    return "", 204


@accounts_api.get("/tokens")
def list_tokens():
    return jsonify(services().accounts.tokens())


@accounts_api.post("/tokens")
def create_token():
    body = json_body()
    info, secret = services().accounts.create_token(body.get("name"), body.get("role", "viewer"),
                                                    created_by=g.principal["name"])
    return jsonify(dict(info, token=secret)), 201


@accounts_api.delete("/tokens/<token_id>")
def revoke_token(token_id: str):
    services().accounts.revoke_token(token_id)
    return "", 204
