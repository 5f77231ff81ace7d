"""The certificate store every edge installs from: chains and sealed private keys in the
database (store.py), the keys that seal them (keyring.py), HTTP-01 answers (challenges.py).

Read by the certifier (writes), the edge agent, the redirector (challenge answers) and
trackctl; it imports no service.
"""

from shared.certificates.accounts import AcmeAccounts
from shared.certificates.challenges import ChallengeAnswers
from shared.certificates.keyring import Keyring, Sealed, SealError
from shared.certificates.pem import CertificateInfo, PemError, check_pair
from shared.certificates.store import SERVED_STATUSES, CertStore, StoredCertificate, Unreadable

__all__ = [
    "SERVED_STATUSES",
    "AcmeAccounts",
    "CertStore",
    "CertificateInfo",
    "ChallengeAnswers",
    "Keyring",
    "PemError",
    "SealError",
    "Sealed",
    "StoredCertificate",
    "Unreadable",
    "check_pair",
]
