"""`diffplex tenants create NAME | delete NAME | list`: tenant administration straight on the configured store
(the same `DIFFPLEX_DATA_DIR` / `DIFFPLEX_REDIS_URL` the server uses), no server or admin key needed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from service.core.settings import Settings
from service.stores import Conflict, open_store
from service.tenants.names import InvalidName, check_tenant_name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffplex tenants", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a tenant and print its API key (shown only once)")
    create.add_argument("name")
    delete = sub.add_parser("delete", help="delete a tenant, its keys, adapters, jobs and files")
    delete.add_argument("name")
    sub.add_parser("list", help="list tenants as JSON lines")
    args = parser.parse_args(argv)

    store = open_store(Settings())
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


if __name__ == "__main__":
    sys.exit(main())
