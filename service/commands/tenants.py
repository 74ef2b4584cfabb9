"""`diffplex tenants create NAME | delete NAME | list`: tenant administration straight on the configured store
(the same `DIFFPLEX_DATA_DIR` / `DIFFPLEX_REDIS_URL` the server uses), no server or admin key needed.

It says which store it used, and it never makes a new local store unless asked (`--create-store`): run from
another directory, the relative default `.work/data` would be a second, empty store whose keys the running
server refuses. The admin HTTP API (`POST /v1/admin/tenants`) is the way that cannot reach the wrong store."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from service.core.settings import Settings
from service.stores import Conflict, open_store
from service.tenants.names import InvalidName, check_tenant_name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffplex tenants", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a tenant and print its API key (shown only once)")
    create.add_argument("name", help="the tenant's name: lowercase letters, digits and -")
    create.add_argument(
        "--create-store",
        action="store_true",
        help="make the local store (DIFFPLEX_DATA_DIR) if it does not exist yet, instead of refusing",
    )
    delete = sub.add_parser("delete", help="delete a tenant, its keys, adapters, jobs and files")
    delete.add_argument("name", help="the tenant to delete")
    sub.add_parser("list", help="list tenants as JSON lines")
    args = parser.parse_args(argv)

    settings = Settings()
    print(f"diffplex tenants: using {describe_store(settings)}", file=sys.stderr)
    if settings.redis_url is None and not settings.data_dir.is_dir() and not getattr(args, "create_store", False):
        print(
            f"diffplex tenants: there is no store at {settings.data_dir.resolve()}: a server run here would make it "
            "on start. Run this command in the directory you started the server from, or set DIFFPLEX_DATA_DIR "
            "(or DIFFPLEX_REDIS_URL) as the server has it; --create-store makes a new, empty store",
            file=sys.stderr,
        )
        return 2
    store = open_store(settings)
    try:
        if args.action == "create":
            try:
                api_key = store.create_tenant(check_tenant_name(args.name))
            except (InvalidName, Conflict) as error:
                print(f"diffplex tenants: {error}", file=sys.stderr)
                return 2
            print(json.dumps({"tenant": args.name, "api_key": api_key}))
        elif args.action == "delete":
            if not store.delete_tenant(args.name):
                print(f"diffplex tenants: no tenant {args.name!r}", file=sys.stderr)
                return 1
            print(json.dumps({"tenant": args.name, "deleted": True}))
        else:
            for tenant in store.list_tenants():
                print(json.dumps({"tenant": tenant.name, "created": int(tenant.created)}))
    finally:
        store.close()
    return 0


def describe_store(settings: Settings) -> str:
    """The store these settings open, as a person can check it against the server's (no password shown)."""
    if settings.redis_url:
        url = urlsplit(settings.redis_url)
        where = f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path or ''}"
        return f"the Redis store at {where}, key prefix {settings.redis_prefix!r} (DIFFPLEX_REDIS_URL)"
    return f"the local store in {settings.data_dir.resolve()} (DIFFPLEX_DATA_DIR)"


if __name__ == "__main__":
    sys.exit(main())
