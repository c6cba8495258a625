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
                                                    created_by=g.principal["name"],
                                                    creator_role=g.principal["role"])
    return jsonify(dict(info, token=secret)), 201


@accounts_api.delete("/tokens/<token_id>")
def revoke_token(token_id: str):
    services().accounts.revoke_token(token_id)
    return "", 204


def openapi_paths() -> dict:
    """This blueprint's part of the OpenAPI document (server/web/openapi.py)."""
    error = {"description": "error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    obj = {"type": "object"}
    role = {"enum": ["viewer", "operator", "admin"]}
    password = {"type": "string", "minLength": 10, "maxLength": 1024}
    listing = {"type": "array", "items": obj}
    user_path = {"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}
    token_path = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}

    def op(summary, body=None, ok="200", parameters=(), errors=(400, 404, 409), answer=obj):
        out = {"summary": summary, "tags": ["accounts"], "parameters": list(parameters),
               "responses": {ok: {"description": "OK", "content": {
                   "application/json": {"schema": answer}}} if ok != "204"
                   else {"description": "done"}, **{str(c): error for c in errors}}}
        if body is not None:
            out["requestBody"] = {"required": True,
                                  "content": {"application/json": {"schema": body}}}
        return out

    return {
        "/me": {"get": op("Who the caller is: name, role, kind (token or session)", errors=())},
        "/users": {
            "get": op("Operator accounts (admin)", errors=(), answer=listing),
            "post": op("Create an account (admin)", {
                "type": "object", "required": ["username", "password"], "properties": {
                    "username": {"type": "string", "pattern": r"^[A-Za-z0-9_.@-]{1,64}$"},
                    "role": role, "password": password}}, ok="201")},
        "/users/{username}": {
            "patch": op("Change an account's role or password (admin; a new password ends "
                        "its sessions)", {"type": "object", "additionalProperties": False,
                                          "properties": {"role": role,
                                                         "password": password}},
                        parameters=[user_path]),
            "delete": op("Delete an account and its sessions (admin)", ok="204",
                         parameters=[user_path])},
        "/tokens": {
            "get": op("API tokens, never their secret (admin)", errors=(), answer=listing),
            "post": op("Create a token {name, role}; the answer's `token` is shown only once "
                       "(admin)", {"type": "object", "required": ["name"], "properties": {
                           "name": {"type": "string", "minLength": 1, "maxLength": 100},
                           "role": role}}, ok="201")},
        "/tokens/{token_id}": {"delete": op("Revoke a token, effective at once (admin)",
                                            ok="204", parameters=[token_path])},
    }
