#!/usr/bin/python
"""drkit.dr.pg_setup: roles and databases on a primary, in one idempotent step.

Why custom: community.postgresql would need four modules and four round trips for the lab's
roles and databases; this is one idempotent step.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_setup
short_description: Ensure PostgreSQL roles (with passwords) and databases exist, in one task
description:
  - Connects to a primary as the superuser and makes roles and databases match the request.
    A password is compared with the stored SCRAM verifier, so an unchanged password is not
    rewritten (and the task reports no change).
  - Runs its statements with C(synchronous_commit = local), so it works on a primary with
    synchronous replication before its standby exists.
  - Supports check mode.
options:
  port:
    description: Port of the primary on O(host).
    type: int
    required: true
  host:
    description: Host (or socket directory) of the primary. Default C(DRKIT_PG_HOST) (the
      lab's socket directory), else 127.0.0.1.
    type: str
  login_user:
    description: Superuser to connect as.
    type: str
    default: postgres
  roles:
    description: Roles to ensure.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Role name., type: str, required: true}
      password: {description: Password (stored as SCRAM-SHA-256; never logged)., type: str}
      login: {description: LOGIN., type: bool, default: true}
      replication: {description: REPLICATION., type: bool, default: false}
  databases:
    description: Databases to ensure.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Database name., type: str, required: true}
      owner: {description: Owner role., type: str, required: true}
  dsn_files:
    description:
      - libpq DSN files to write (mode 0600, atomically, only when their content differs), each
        for one of O(roles) with its password. The payments service reads them.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: File to write., type: path, required: true}
      role: {description: A role of O(roles) (its password goes into the file)., type: str,
        required: true}
      dbname: {description: Database., type: str, required: true}
      port: {description: Port (each region's service points at its own cluster)., type: int,
        required: true}
      host: {description: Host., type: str, default: 127.0.0.1}
      application_name: {description: application_name of the connections., type: str}
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Create the payments role and database
  drkit.dr.pg_setup:
    port: 17402
    roles:
      - {name: replication, replication: true}
      - {name: payments, password: "{{ drkit_lab_payments_password }}"}
    databases:
      - {name: payments, owner: payments}
    dsn_files:
      - {path: /var/tmp/drkit-lab/services/eu-west-1.dsn, role: payments, dbname: payments,
         port: 17402, application_name: payments-eu-west-1}
  no_log: true
"""

RETURN = r"""
actions:
  description: Statements' summaries (never passwords), in order.
  returned: always
  type: list
  elements: str
tables:
  description: Number of tables each requested database's owner owns in it (0 = no schema yet).
  returned: always
  type: dict
"""

import base64
import hashlib
import hmac
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.pgutil import PgError, connect
from ansible_collections.drkit.dr.plugins.module_utils.runtime import write_atomic


def scram_matches(verifier, password):
    """True when `password` produces the stored SCRAM-SHA-256 `verifier` (RFC 5803 format)."""
    if not verifier or not password or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = verifier[len("SCRAM-SHA-256$"):].split("$", 1)
        iterations, salt = head.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"),
                                     base64.b64decode(salt), int(iterations))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        return (hmac.compare_digest(base64.b64encode(hashlib.sha256(client_key).digest()),
                                    stored_key.encode())
                and hmac.compare_digest(base64.b64encode(server), server_key.encode()))
    except (ValueError, TypeError):
        return False


def main():
    module = AnsibleModule(
        argument_spec=dict(
            port=dict(type="int", required=True),
            host=dict(type="str"),
            login_user=dict(type="str", default="postgres"),
            roles=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", no_log=True),
                login=dict(type="bool", default=True),
                replication=dict(type="bool", default=False),
            )),
            databases=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                owner=dict(type="str", required=True),
            )),
            dsn_files=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True),
                role=dict(type="str", required=True),
                dbname=dict(type="str", required=True),
                port=dict(type="int", required=True),
                host=dict(type="str", default="127.0.0.1"),
                application_name=dict(type="str"),
            )),
        ),
        supports_check_mode=True,
    )
    p = module.params
    from psycopg import sql

    actions = []
    tables = {}
    try:
        conn = connect(p["port"], host=p["host"], user=p["login_user"], timeout=5)
    except PgError as e:
        module.fail_json(msg=str(e))
    try:
        conn.execute("SET synchronous_commit TO local")
        for role in p["roles"]:
            name = role["name"]
            row = conn.execute(
                "SELECT rolcanlogin, rolreplication, rolpassword FROM pg_authid "
                "WHERE rolname = %s", (name,)).fetchone()
            attrs = sql.SQL(" ").join([
                sql.SQL("LOGIN" if role["login"] else "NOLOGIN"),
                sql.SQL("REPLICATION" if role["replication"] else "NOREPLICATION"),
            ])
            password = role["password"]
            if row is None:
                actions.append("create role %s" % name)
                stmt = sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), attrs)
            else:
                want_pw = password is not None and not scram_matches(row[2], password)
                if row[0] == role["login"] and row[1] == role["replication"] and not want_pw:
                    continue
                actions.append("alter role %s" % name)
                stmt = sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(name), attrs)
            if password is not None:
                stmt = sql.SQL("{} PASSWORD {}").format(stmt, sql.Literal(password))
            if not module.check_mode:
                conn.execute("SET password_encryption TO 'scram-sha-256'")
                conn.execute(stmt)
        for db in p["databases"]:
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                (db["name"],)).fetchone()
            if row is None:
                actions.append("create database %s" % db["name"])
                if not module.check_mode:
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(db["name"]), sql.Identifier(db["owner"])))
                tables[db["name"]] = 0
                continue
            if row[0] != db["owner"]:
                actions.append("alter database %s owner" % db["name"])
                if not module.check_mode:
                    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(db["name"]), sql.Identifier(db["owner"])))
            other = connect(p["port"], host=p["host"], user=p["login_user"],
                            dbname=db["name"], timeout=5)
            try:
                tables[db["name"]] = other.execute(
                    "SELECT count(*) FROM pg_tables WHERE tableowner = %s",
                    (db["owner"],)).fetchone()[0]
            finally:
                other.close()
    except PgError as e:
        module.fail_json(msg=str(e), actions=actions)
    except Exception as e:  # psycopg.Error: one line, never the statement (it may hold a password)
        module.fail_json(msg="PostgreSQL on port %d: %s" % (
            p["port"], str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__),
            actions=actions)
    finally:
        conn.close()
    passwords = dict((r["name"], r["password"]) for r in p["roles"])
    for dsn in p["dsn_files"]:
        if dsn["role"] not in passwords:
            module.fail_json(msg="dsn_files: role %s is not in roles" % dsn["role"])
        words = ["host=%s" % dsn["host"], "port=%d" % dsn["port"], "dbname=%s" % dsn["dbname"],
                 "user=%s" % dsn["role"]]
        if passwords[dsn["role"]]:
            words.append("password=%s" % conninfo_quote(passwords[dsn["role"]]))
        if dsn["application_name"]:
            words.append("application_name=%s" % dsn["application_name"])
        words.append("connect_timeout=2")
        text = " ".join(words) + "\n"
        try:
            with open(dsn["path"], encoding="utf-8") as f:
                same = f.read() == text and (os.stat(dsn["path"]).st_mode & 0o777) == 0o600
        except OSError:
            same = False
        if same:
            continue
        actions.append("write %s" % dsn["path"])
        if not module.check_mode:
            parent = os.path.dirname(dsn["path"])
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            write_atomic(dsn["path"], text, 0o600)
    module.exit_json(changed=bool(actions), actions=actions, tables=tables)


def conninfo_quote(value):
    """A libpq conninfo value: quoted when it holds spaces, quotes or backslashes."""
    if value and not any(c in value for c in " '\\"):
        return value
    return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")


if __name__ == "__main__":
    main()
