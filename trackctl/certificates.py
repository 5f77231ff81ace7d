"""`trackctl certificates keys|reseal`: the certificate store's keys after a rotation.

`keys` counts what each CERT_STORE_KEYS key id seals (private keys, the ACME account);
`reseal` re-encrypts everything under the first key, so the old key can then be
removed from CERT_STORE_KEYS everywhere (docs/certificates.md, "Rotating the store
keys"). Both are safe to repeat and to run while the certifier works.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from shared.certificates import AcmeAccounts, CertStore, Keyring, SealError
from shared.settings import CERT_STORE_KEYS
from trackctl import connections
from trackctl.output import OK, CliError, emit_json, table
from trackctl.settings import reader


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    keyring = Keyring(reader(environ)[CERT_STORE_KEYS])
    async with connections.database(environ) as engine:
        store, accounts = CertStore(engine, keyring), AcmeAccounts(engine, keyring)
        resealed = {"private_keys": 0, "acme_accounts": 0}
        if args.certificates_command == "reseal":
            try:
                resealed = {"private_keys": await store.reseal(),
                            "acme_accounts": await accounts.reseal()}
            except SealError as exc:
                raise CliError(f"{exc}: list every key id still in use in CERT_STORE_KEYS "
                               "(see `trackctl certificates keys`)") from None
        counts = await store.key_ids()
        for kid, count in (await accounts.key_ids()).items():
            counts[f"{kid} (account)"] = count
    unlisted = sorted({kid.split(" ")[0] for kid in counts} - set(keyring.kids))
    if args.json:
        emit_json({"current_kid": keyring.current_kid, "sealed_by_kid": counts,
                   "resealed": resealed, "unlisted_kids": unlisted})
        return OK
    if args.certificates_command == "reseal":
        print(f"resealed under {keyring.current_kid}: {resealed['private_keys']} private "
              f"key(s), {resealed['acme_accounts']} ACME account(s)")
    print(table(["key id", "sealed"], sorted(counts.items()), right=["sealed"]))
    if unlisted:
        print(f"not in CERT_STORE_KEYS (unreadable): {', '.join(unlisted)}")
    return OK
