#!/usr/bin/env python3
"""Labelled corpus for measuring secrets scanners: recall, false positives and throughput.

Deterministic (fixed seed, standard library only, no network). Every credential is generated
with a random body in the shape its vendor documents (prefix, length, alphabet, and the checksum
where the format has one: GitHub and npm tokens' CRC32 in base62, age keys' bech32 checksum, the
CRC-24 of an OpenPGP armor, Grafana service account tokens' CRC32; PEM bodies are DER that decodes; JWTs and JSON-bearing tokens carry
valid JSON). None of them is a real key.

    scripts/secrets-corpus.py --out DIR            # writes DIR/corpus/ and DIR/labels.json
    scripts/secrets-corpus.py --out DIR --self-check

Layout: DIR/corpus/pos/<n>/<file> holds exactly one secret each; DIR/corpus/neg/<n>/<file> holds
none (placeholders, references, look-alikes, hashes, documentation with redacted examples).
DIR/labels.json lists every positive file with the lines of its secret and the format id, and
every negative file with its kind. No secret value is written to labels.json.
"""

import argparse
import base64
import binascii
import hashlib
import json
import os
import random
import string
import sys
import zlib

SEED = 20261202

UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
AN = UPPER + LOWER + DIGITS
LAN = LOWER + DIGITS
UAN = UPPER + DIGITS
HEX = "0123456789abcdef"
UHEX = HEX.upper()
B64 = AN + "+/"
B64U = AN + "-_"
B32 = UPPER + "234567"
BASE62 = DIGITS + UPPER + LOWER


class Gen:
    """Random helpers over one seeded generator."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def s(self, alphabet, n):
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def b(self, n):
        return bytes(self.r.getrandbits(8) for _ in range(n))

    def digits(self, n):
        return str(self.r.randint(1, 9)) + self.s(DIGITS, n - 1)

    def uuid(self):
        h = self.s(HEX, 32)
        h = h[:12] + "4" + h[13:16] + self.r.choice("89ab") + h[17:]
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def word(self):
        return self.r.choice(
            ["orion", "tundra", "harbor", "quartz", "lumen", "cobalt", "meadow", "falcon",
             "ember", "atlas", "nimbus", "sable", "vertex", "willow", "zephyr", "canyon"]
        )


def b64(data):
    return base64.b64encode(data).decode()


def b64u(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def base62(n, width):
    out = ""
    while n:
        n, d = divmod(n, 62)
        out = BASE62[d] + out
    return out.rjust(width, "0")


def crc32_base62(text):
    return base62(zlib.crc32(text.encode()) & 0xFFFFFFFF, 6)


def grafana_sa(g, bad_checksum=False):
    """Grafana service account token: `glsa_` + 32 alphanumerics + `_` + CRC32 (IEEE) of what
    precedes it, as 4 little-endian bytes in hex (grafana pkg/components/satokengen)."""
    key = "glsa_" + g.s(AN, 32)
    crc = zlib.crc32(key.encode()) & 0xFFFFFFFF
    if bad_checksum:
        crc ^= 0x1
    return key + "_" + crc.to_bytes(4, "little").hex()


def github_style(g, prefix):
    """GitHub (and npm) token: prefix, 30 base62 characters, CRC32 of them in 6 base62."""
    body = g.s(AN, 30)
    return prefix + body + crc32_base62(body)


BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((top >> i) & 1) else 0
    return chk


def bech32_encode(hrp, data8):
    acc, bits, data = 0, 0, []
    for byte in data8:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    poly = bech32_polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32[d] for d in data + checksum)


def age_key(g, bad_checksum=False):
    key = bech32_encode("age-secret-key-", g.b(32)).upper()
    if bad_checksum:
        last = key[-1]
        key = key[:-1] + next(c for c in BECH32.upper() if c != last)
    return key


def jwt(g, claims=None):
    header = {"alg": "HS256", "typ": "JWT"}
    payload = claims or {
        "sub": g.uuid(),
        "iss": f"https://auth.{g.word()}corp.io/",
        "iat": 1760000000 + g.r.randint(0, 10**7),
        "exp": 1790000000 + g.r.randint(0, 10**7),
        "scope": "read write",
    }
    enc = lambda o: b64u(json.dumps(o, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}.{b64u(g.b(32))}"


# ---- DER / PEM ------------------------------------------------------------------------------


def der(tag, body):
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        nb = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(nb)]) + nb
    return bytes([tag]) + length + body


def der_int(raw):
    raw = raw.lstrip(b"\0") or b"\0"
    if raw[0] & 0x80:
        raw = b"\0" + raw
    return der(0x02, raw)


def der_seq(*items):
    return der(0x30, b"".join(items))


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    out = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        enc = [p & 0x7F]
        p >>= 7
        while p:
            enc.insert(0, 0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(enc)
    return der(0x06, out)


def rsa_pkcs1(g):
    ints = [b"\0", g.b(256), (65537).to_bytes(3, "big"), g.b(256)] + [g.b(128) for _ in range(5)]
    return der_seq(*[der_int(i) for i in ints])


def pem(label, body, width=64):
    text = b64(body)
    lines = [text[i:i + width] for i in range(0, len(text), width)]
    return [f"-----BEGIN {label}-----"] + lines + [f"-----END {label}-----"]


def key_rsa(g):
    return pem("RSA PRIVATE KEY", rsa_pkcs1(g))


def key_ec(g):
    body = der_seq(
        der_int(b"\x01"),
        der(0x04, g.b(32)),
        der(0xA0, oid("1.2.840.10045.3.1.7")),
        der(0xA1, der(0x03, b"\x00\x04" + g.b(64))),
    )
    return pem("EC PRIVATE KEY", body)


def key_pkcs8(g):
    body = der_seq(
        der_int(b"\0"),
        der_seq(oid("1.2.840.113549.1.1.1"), der(0x05, b"")),
        der(0x04, rsa_pkcs1(g)),
    )
    return pem("PRIVATE KEY", body)


def key_pkcs8_encrypted(g):
    params = der_seq(
        der_seq(oid("1.2.840.113549.1.5.12"), der_seq(der(0x04, g.b(16)), der_int(b"\x08\x00"))),
        der_seq(oid("2.16.840.1.101.3.4.1.42"), der(0x04, g.b(16))),
    )
    body = der_seq(der_seq(oid("1.2.840.113549.1.5.13"), params), der(0x04, g.b(1232)))
    return pem("ENCRYPTED PRIVATE KEY", body)


def key_dsa(g):
    ints = [b"\0", g.b(128), g.b(20), g.b(128), g.b(128), g.b(20)]
    return pem("DSA PRIVATE KEY", der_seq(*[der_int(i) for i in ints]))


def ssh_string(data):
    return len(data).to_bytes(4, "big") + data


def key_openssh(g):
    pub = g.b(32)
    pub_blob = ssh_string(b"ssh-ed25519") + ssh_string(pub)
    check = g.b(4)
    private = check + check + ssh_string(b"ssh-ed25519") + ssh_string(pub)
    private += ssh_string(g.b(32) + pub) + ssh_string(b"deploy@build-01")
    private += bytes(range(1, 1 + (-len(private)) % 8))
    body = b"openssh-key-v1\0" + ssh_string(b"none") + ssh_string(b"none") + ssh_string(b"")
    body += (1).to_bytes(4, "big") + ssh_string(pub_blob) + ssh_string(private)
    return pem("OPENSSH PRIVATE KEY", body, width=70)


def crc24(data):
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def key_pgp(g):
    packet = bytes([0x95, 0x03, 0xC6]) + bytes([4]) + g.b(4) + bytes([1]) + g.b(0x3C6 - 6)
    text = b64(packet)
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    check = b64(crc24(packet).to_bytes(3, "big"))
    return ["-----BEGIN PGP PRIVATE KEY BLOCK-----", ""] + lines + ["=" + check,
                                                                     "-----END PGP PRIVATE KEY BLOCK-----"]


def key_putty(g):
    pub = b64(ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01") + ssh_string(b"\0" + g.b(256)))
    priv = b64(ssh_string(b"\0" + g.b(256)) + ssh_string(g.b(128)) + ssh_string(g.b(128))
               + ssh_string(g.b(128)))
    pl = [pub[i:i + 64] for i in range(0, len(pub), 64)]
    vl = [priv[i:i + 64] for i in range(0, len(priv), 64)]
    return (["PuTTY-User-Key-File-2: ssh-rsa", "Encryption: none", "Comment: rsa-key-20260411",
             f"Public-Lines: {len(pl)}"] + pl + [f"Private-Lines: {len(vl)}"] + vl
            + ["Private-MAC: " + g.s(HEX, 40)])


# ---- formats ---------------------------------------------------------------------------------
# (id, category, variable name, kind, generator). kind: "token" (usable as a bearer token),
# "basic" (an Authorization: Basic credential), "url" (a URL or connection string), "pem"
# (a multi-line block). The prefix (for look-alikes) is taken from the generator's output.


def F(fid, cat, var, gen, kind="token", prefix=None):
    return {"id": fid, "category": cat, "var": var, "gen": gen, "kind": kind, "prefix": prefix}


def formats():
    S = lambda p, a, n: (lambda g: p + g.s(a, n))  # noqa: E731
    fs = [
        # cloud
        F("aws-access-key-id", "cloud", "AWS_ACCESS_KEY_ID", S("AKIA", B32, 16), prefix="AKIA"),
        F("aws-temporary-access-key-id", "cloud", "AWS_ACCESS_KEY_ID", S("ASIA", B32, 16), prefix="ASIA"),
        F("aws-secret-access-key", "cloud", "AWS_SECRET_ACCESS_KEY", S("", AN + "+/", 40)),
        F("aws-session-token", "cloud", "AWS_SESSION_TOKEN", lambda g: "IQoJb3JpZ2luX2VjE" + g.s(B64, 380), prefix="IQoJb3JpZ2luX2VjE"),
        F("gcp-api-key", "cloud", "GOOGLE_API_KEY", S("AIza", B64U, 35), prefix="AIza"),
        F("gcp-oauth-client-secret", "cloud", "GOOGLE_CLIENT_SECRET", S("GOCSPX-", B64U, 28), prefix="GOCSPX-"),
        F("gcp-oauth-access-token", "cloud", "GOOGLE_ACCESS_TOKEN", S("ya29.", B64U, 160), prefix="ya29."),
        F("gcp-oauth-refresh-token", "cloud", "GOOGLE_REFRESH_TOKEN", S("1//0", B64U, 99), prefix="1//0"),
        F("azure-storage-connection-string", "cloud", "AZURE_STORAGE_CONNECTION_STRING",
          lambda g: f"DefaultEndpointsProtocol=https;AccountName={g.word()}store{g.s(LAN, 4)};AccountKey={b64(g.b(64))};EndpointSuffix=core.windows.net", "url"),
        F("azure-storage-sas-url", "cloud", "AZURE_BLOB_SAS_URL",
          lambda g: f"https://{g.word()}data.blob.core.windows.net/exports?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2027-06-30T00:00:00Z&st=2026-01-01T00:00:00Z&spr=https&sig={b64(g.b(32)).replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}", "url"),
        F("azure-ad-client-secret", "cloud", "AZURE_CLIENT_SECRET", lambda g: g.s(AN, 3) + g.s(DIGITS, 1) + "Q~" + g.s(AN + "._~-", 34)),
        F("azure-service-bus-connection-string", "cloud", "SERVICEBUS_CONNECTION",
          lambda g: f"Endpoint=sb://{g.word()}-bus.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={b64(g.b(32))}", "url"),
        F("azure-cosmosdb-connection-string", "cloud", "COSMOS_CONNECTION_STRING",
          lambda g: f"AccountEndpoint=https://{g.word()}-db.documents.azure.com:443/;AccountKey={b64(g.b(64))};", "url"),
        F("azure-app-configuration-connection-string", "cloud", "APP_CONFIG_CONNECTION_STRING",
          lambda g: f"Endpoint=https://{g.word()}-cfg.azconfig.io;Id={g.s(AN, 4)}-l0-s0:{g.s(AN, 20)};Secret={b64(g.b(32))}", "url"),
        F("azure-devops-pat", "cloud", "AZURE_DEVOPS_PAT", S("", LOWER + "234567", 52)),
        F("azure-openai-key", "ai", "AZURE_OPENAI_API_KEY", S("", HEX, 32)),
        F("alibaba-access-key-id", "cloud", "ALIBABA_CLOUD_ACCESS_KEY_ID", S("LTAI", AN, 20), prefix="LTAI"),
        F("alibaba-access-key-secret", "cloud", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", S("", AN, 30)),
        F("tencent-cloud-secret-id", "cloud", "TENCENTCLOUD_SECRET_ID", S("AKID", AN, 32), prefix="AKID"),
        F("ibm-cloud-api-key", "cloud", "IBMCLOUD_API_KEY", S("", B64U, 44)),
        F("digitalocean-pat", "cloud", "DIGITALOCEAN_TOKEN", S("dop_v1_", HEX, 64), prefix="dop_v1_"),
        F("digitalocean-oauth-token", "cloud", "DIGITALOCEAN_ACCESS_TOKEN", S("doo_v1_", HEX, 64), prefix="doo_v1_"),
        F("digitalocean-refresh-token", "cloud", "DIGITALOCEAN_REFRESH_TOKEN", S("dor_v1_", HEX, 64), prefix="dor_v1_"),
        F("linode-token", "cloud", "LINODE_TOKEN", S("", HEX, 64)),
        F("hetzner-cloud-token", "cloud", "HCLOUD_TOKEN", S("", AN, 64)),
        F("cloudflare-api-token", "cloud", "CLOUDFLARE_API_TOKEN", S("", B64U, 40)),
        F("cloudflare-global-api-key", "cloud", "CLOUDFLARE_API_KEY", S("", HEX, 37)),
        F("cloudflare-origin-ca-key", "cloud", "CF_ORIGIN_CA_KEY", lambda g: "v1.0-" + g.s(HEX, 24) + "-" + g.s(HEX, 146), prefix="v1.0-"),
        F("heroku-api-key", "cloud", "HEROKU_API_KEY", S("HRKU-AA", B64U, 58), prefix="HRKU-AA"),
        F("flyio-org-token", "cloud", "FLY_API_TOKEN", S("fo1_", B64U, 43), prefix="fo1_"),
        F("netlify-pat", "cloud", "NETLIFY_AUTH_TOKEN", S("nfp_", AN, 36), prefix="nfp_"),
        F("vercel-token", "cloud", "VERCEL_TOKEN", S("", AN, 24)),
        F("supabase-access-token", "cloud", "SUPABASE_ACCESS_TOKEN", S("sbp_", HEX, 40), prefix="sbp_"),
        F("supabase-secret-key", "cloud", "SUPABASE_SECRET_KEY", S("sb_secret_", B64U, 31), prefix="sb_secret_"),
        F("render-api-key", "cloud", "RENDER_API_KEY", S("rnd_", AN, 32), prefix="rnd_"),
        F("pulumi-access-token", "cloud", "PULUMI_ACCESS_TOKEN", S("pul-", HEX, 40), prefix="pul-"),
        F("terraform-cloud-token", "cloud", "TFE_TOKEN", lambda g: g.s(AN, 14) + ".atlasv1." + g.s(B64U, 67)),
        F("vault-service-token", "cloud", "VAULT_TOKEN", S("hvs.", B64U, 90), prefix="hvs."),
        F("vault-batch-token", "cloud", "VAULT_BATCH_TOKEN", S("hvb.", B64U, 138), prefix="hvb."),
        F("doppler-personal-token", "cloud", "DOPPLER_TOKEN", S("dp.pt.", AN, 43), prefix="dp.pt."),
        F("doppler-service-token", "cloud", "DOPPLER_SERVICE_TOKEN", S("dp.st.", AN, 43), prefix="dp.st."),
        F("okta-api-token", "cloud", "OKTA_API_TOKEN", S("00", B64U, 40)),
        F("auth0-client-secret", "cloud", "AUTH0_CLIENT_SECRET", S("", B64U, 64)),
        F("onepassword-service-account-token", "saas", "OP_SERVICE_ACCOUNT_TOKEN",
          lambda g: "ops_" + b64u(json.dumps({"signInAddress": "my.1password.com", "userAuth": {"method": "SRPg-4096", "alg": "PBES2g-HS256", "iterations": 650000, "salt": b64u(g.b(16))}, "email": g.s(LAN, 12) + "@1passwordserviceaccounts.com", "srpX": g.s(HEX, 64), "muk": {"alg": "A256GCM", "ext": True, "k": b64u(g.b(32)), "key_ops": ["encrypt", "decrypt"], "kty": "oct", "kid": "mp"}, "secretKey": "A3-" + g.s(UAN, 6) + "-" + g.s(UAN, 6), "deviceUuid": g.s(LAN, 26)}).encode()), prefix="ops_eyJ"),
        F("onepassword-secret-key", "saas", "OP_SECRET_KEY", lambda g: "A3-" + "-".join([g.s(UAN, 6), g.s(UAN, 6), g.s(UAN, 5), g.s(UAN, 5), g.s(UAN, 5), g.s(UAN, 5)]), prefix="A3-"),
        F("tailscale-auth-key", "cloud", "TS_AUTHKEY", lambda g: "tskey-auth-k" + g.s(AN, 10) + "CNTRL-" + g.s(AN, 33), prefix="tskey-auth-"),
        F("ngrok-authtoken", "cloud", "NGROK_AUTHTOKEN", lambda g: "2" + g.s(AN, 26) + "_" + g.s(AN, 21)),
        F("scalingo-api-token", "cloud", "SCALINGO_API_TOKEN", S("tk-us-", B64U, 48), prefix="tk-us-"),
        F("defined-networking-api-key", "cloud", "DN_API_KEY", lambda g: "dnkey-" + g.s(UAN, 26) + "-" + g.s(UAN, 52), prefix="dnkey-"),
        F("yandex-api-key", "cloud", "YC_API_KEY", S("AQVN", B64U, 36), prefix="AQVN"),
        F("infracost-api-key", "cloud", "INFRACOST_API_KEY", S("ico-", AN, 32), prefix="ico-"),
        # version control
        F("github-pat-classic", "vcs", "GITHUB_TOKEN", lambda g: github_style(g, "ghp_"), prefix="ghp_"),
        F("github-oauth-token", "vcs", "GH_OAUTH_TOKEN", lambda g: github_style(g, "gho_"), prefix="gho_"),
        F("github-user-to-server-token", "vcs", "GH_USER_TOKEN", lambda g: github_style(g, "ghu_"), prefix="ghu_"),
        F("github-server-to-server-token", "vcs", "GH_APP_INSTALLATION_TOKEN", lambda g: github_style(g, "ghs_"), prefix="ghs_"),
        F("github-refresh-token", "vcs", "GH_REFRESH_TOKEN", lambda g: github_style(g, "ghr_"), prefix="ghr_"),
        F("github-fine-grained-pat", "vcs", "GITHUB_PAT", lambda g: "github_pat_11" + g.s(UAN, 20) + "_" + g.s(AN, 59), prefix="github_pat_"),
        F("gitlab-pat", "vcs", "GITLAB_TOKEN", S("glpat-", B64U, 20), prefix="glpat-"),
        F("gitlab-pipeline-trigger-token", "ci", "GITLAB_TRIGGER_TOKEN", S("glptt-", HEX, 40), prefix="glptt-"),
        F("gitlab-runner-registration-token", "ci", "RUNNER_REGISTRATION_TOKEN", S("GR1348941", B64U, 20), prefix="GR1348941"),
        F("gitlab-runner-auth-token", "ci", "RUNNER_TOKEN", S("glrt-", B64U, 20), prefix="glrt-"),
        F("gitlab-deploy-token", "vcs", "GITLAB_DEPLOY_TOKEN", S("gldt-", B64U, 20), prefix="gldt-"),
        F("gitlab-feed-token", "vcs", "GITLAB_FEED_TOKEN", S("glft-", B64U, 20), prefix="glft-"),
        F("gitlab-oauth-app-secret", "vcs", "GITLAB_OAUTH_SECRET", S("gloas-", HEX, 64), prefix="gloas-"),
        F("gitlab-scim-token", "vcs", "GITLAB_SCIM_TOKEN", S("glsoat-", B64U, 20), prefix="glsoat-"),
        F("gitlab-incoming-mail-token", "vcs", "GITLAB_INCOMING_EMAIL_TOKEN", S("glimt-", B64U, 25), prefix="glimt-"),
        F("gitlab-agent-token", "vcs", "GITLAB_AGENT_TOKEN", S("glagent-", B64U, 50), prefix="glagent-"),
        F("bitbucket-app-password", "vcs", "BITBUCKET_APP_PASSWORD", lambda g: "ATBB" + g.s(AN, 28) + g.s(UHEX, 8), prefix="ATBB"),
        F("atlassian-api-token", "saas", "ATLASSIAN_API_TOKEN", lambda g: "ATATT3xFfGF0" + g.s(B64U, 170) + "=" + g.s(UHEX, 8), prefix="ATATT3"),
        F("gitea-token", "vcs", "GITEA_TOKEN", S("", HEX, 40)),
        F("sourcegraph-access-token", "vcs", "SRC_ACCESS_TOKEN", lambda g: "sgp_" + g.s(HEX, 16) + "_" + g.s(HEX, 40), prefix="sgp_"),
        F("huggingface-token", "ai", "HF_TOKEN", S("hf_", UPPER + LOWER, 34), prefix="hf_"),
        F("huggingface-org-token", "ai", "HF_ORG_TOKEN", S("api_org_", UPPER + LOWER, 34), prefix="api_org_"),
        # CI / CD
        F("circleci-personal-token", "ci", "CIRCLECI_TOKEN", lambda g: "CCIPAT_" + g.s(AN, 22) + "_" + g.s(HEX, 40), prefix="CCIPAT_"),
        F("travis-ci-token", "ci", "TRAVIS_API_TOKEN", S("", B64U, 22)),
        F("buildkite-agent-token", "ci", "BUILDKITE_API_TOKEN", S("bkua_", HEX, 40), prefix="bkua_"),
        F("jenkins-api-token", "ci", "JENKINS_API_TOKEN", S("11", HEX, 32)),
        F("drone-token", "ci", "DRONE_TOKEN", S("", AN, 32)),
        F("sonarqube-user-token", "ci", "SONAR_TOKEN", S("squ_", HEX, 40), prefix="squ_"),
        F("sonarqube-project-token", "ci", "SONAR_PROJECT_TOKEN", S("sqp_", HEX, 40), prefix="sqp_"),
        F("sonarqube-global-token", "ci", "SONAR_GLOBAL_TOKEN", S("sqa_", HEX, 40), prefix="sqa_"),
        F("octopus-deploy-api-key", "ci", "OCTOPUS_API_KEY", S("API-", UAN, 26), prefix="API-"),
        F("harness-pat", "ci", "HARNESS_API_KEY", lambda g: "pat." + g.s(B64U, 22) + "." + g.s(AN, 24) + "." + g.s(AN, 20), prefix="pat."),
        F("docker-hub-pat", "registry", "DOCKERHUB_TOKEN", S("dckr_pat_", B64U, 27), prefix="dckr_pat_"),
        F("docker-hub-oat", "registry", "DOCKERHUB_ORG_TOKEN", S("dckr_oat_", B64U, 32), prefix="dckr_oat_"),
        F("docker-config-auth", "registry", "DOCKER_AUTH", lambda g: b64(f"ci-bot:dckr_pat_{g.s(B64U, 27)}".encode()), kind="basic"),
        F("jfrog-api-key", "registry", "ARTIFACTORY_API_KEY", S("AKCp", AN, 69), prefix="AKCp"),
        F("jfrog-identity-token", "registry", "JFROG_ACCESS_TOKEN", lambda g: b64(f"reftkn:01:{1780000000 + g.r.randint(0, 10**7)}:{g.s(AN, 33)}".encode()).rstrip("="), prefix="cmVmdGtuOjAxOj"),
        F("npm-access-token", "registry", "NPM_TOKEN", lambda g: github_style(g, "npm_"), prefix="npm_"),
        F("pypi-upload-token", "registry", "PYPI_TOKEN", lambda g: "pypi-AgEIcHlwaS5vcmc" + g.s(B64U, 150), prefix="pypi-AgEIcHlwaS5vcmc"),
        F("testpypi-upload-token", "registry", "TEST_PYPI_TOKEN", lambda g: "pypi-AgENdGVzdC5weXBpLm9yZw" + g.s(B64U, 150), prefix="pypi-AgENdGVzdC5weXBpLm9yZw"),
        F("rubygems-api-key", "registry", "GEM_HOST_API_KEY", S("rubygems_", HEX, 48), prefix="rubygems_"),
        F("nuget-api-key", "registry", "NUGET_API_KEY", S("oy2", LAN, 43), prefix="oy2"),
        F("crates-io-token", "registry", "CARGO_REGISTRY_TOKEN", S("cio", AN, 32), prefix="cio"),
        F("clojars-token", "registry", "CLOJARS_PASSWORD", S("CLOJARS_", HEX, 60), prefix="CLOJARS_"),
        # payment
        F("stripe-secret-key", "payment", "STRIPE_SECRET_KEY", S("sk_live_", AN, 99), prefix="sk_live_"),
        F("stripe-restricted-key", "payment", "STRIPE_RESTRICTED_KEY", S("rk_live_", AN, 99), prefix="rk_live_"),
        F("stripe-test-secret-key", "payment", "STRIPE_TEST_SECRET_KEY", S("sk_test_", AN, 24), prefix="sk_test_"),
        F("stripe-webhook-secret", "payment", "STRIPE_WEBHOOK_SECRET", S("whsec_", AN, 32), prefix="whsec_"),
        F("square-access-token", "payment", "SQUARE_ACCESS_TOKEN", S("EAAA", B64U, 60), prefix="EAAA"),
        F("square-oauth-secret", "payment", "SQUARE_OAUTH_SECRET", S("sq0csp-", B64U, 43), prefix="sq0csp-"),
        F("braintree-access-token", "payment", "BRAINTREE_ACCESS_TOKEN", lambda g: "access_token$production$" + g.s(LAN, 16) + "$" + g.s(HEX, 32), prefix="access_token$production$"),
        F("razorpay-key-secret", "payment", "RAZORPAY_KEY", S("rzp_live_", AN, 14), prefix="rzp_live_"),
        F("flutterwave-secret-key", "payment", "FLW_SECRET_KEY", lambda g: "FLWSECK-" + g.s(HEX, 32) + "-X", prefix="FLWSECK-"),
        F("plaid-access-token", "payment", "PLAID_ACCESS_TOKEN", lambda g: "access-production-" + g.uuid(), prefix="access-production-"),
        F("shopify-access-token", "payment", "SHOPIFY_ACCESS_TOKEN", S("shpat_", HEX, 32), prefix="shpat_"),
        F("shopify-shared-secret", "payment", "SHOPIFY_SHARED_SECRET", S("shpss_", HEX, 32), prefix="shpss_"),
        F("shopify-custom-app-token", "payment", "SHOPIFY_CUSTOM_APP_TOKEN", S("shpca_", HEX, 32), prefix="shpca_"),
        F("shopify-private-app-token", "payment", "SHOPIFY_PRIVATE_APP_TOKEN", S("shppa_", HEX, 32), prefix="shppa_"),
        F("gocardless-access-token", "payment", "GOCARDLESS_ACCESS_TOKEN", S("live_", B64U, 40), prefix="live_"),
        F("easypost-api-key", "payment", "EASYPOST_API_KEY", S("EZAK", AN, 54), prefix="EZAK"),
        F("duffel-access-token", "payment", "DUFFEL_ACCESS_TOKEN", S("duffel_live_", B64U, 43), prefix="duffel_live_"),
        F("shippo-api-token", "payment", "SHIPPO_API_TOKEN", S("shippo_live_", HEX, 40), prefix="shippo_live_"),
        # messaging
        F("slack-bot-token", "messaging", "SLACK_BOT_TOKEN", lambda g: f"xoxb-{g.digits(12)}-{g.digits(13)}-{g.s(AN, 24)}", prefix="xoxb-"),
        F("slack-user-token", "messaging", "SLACK_USER_TOKEN", lambda g: f"xoxp-{g.digits(12)}-{g.digits(12)}-{g.digits(13)}-{g.s(HEX, 32)}", prefix="xoxp-"),
        F("slack-app-token", "messaging", "SLACK_APP_TOKEN", lambda g: f"xapp-1-A{g.s(UAN, 10)}-{g.digits(13)}-{g.s(HEX, 64)}", prefix="xapp-"),
        F("slack-config-refresh-token", "messaging", "SLACK_CONFIG_REFRESH_TOKEN", lambda g: f"xoxe-1-{g.s(AN, 146)}", prefix="xoxe-"),
        F("slack-webhook-url", "messaging", "SLACK_WEBHOOK_URL", lambda g: f"https://hooks.slack.com/services/T{g.s(UAN, 10)}/B{g.s(UAN, 10)}/{g.s(AN, 24)}", "url"),
        F("discord-bot-token", "messaging", "DISCORD_BOT_TOKEN", lambda g: b64(g.digits(19).encode()).rstrip("=") + "." + g.s(B64U, 6) + "." + g.s(B64U, 38)),
        F("discord-webhook-url", "messaging", "DISCORD_WEBHOOK_URL", lambda g: f"https://discord.com/api/webhooks/{g.digits(19)}/{g.s(B64U, 68)}", "url"),
        F("telegram-bot-token", "messaging", "TELEGRAM_BOT_TOKEN", lambda g: f"{g.digits(10)}:AA{g.s(B64U, 33)}"),
        F("twilio-api-key", "messaging", "TWILIO_API_KEY", S("SK", HEX, 32), prefix="SK"),
        F("twilio-auth-token", "messaging", "TWILIO_AUTH_TOKEN", S("", HEX, 32)),
        F("sendgrid-api-key", "messaging", "SENDGRID_API_KEY", lambda g: "SG." + g.s(B64U, 22) + "." + g.s(B64U, 43), prefix="SG."),
        F("mailgun-api-key", "messaging", "MAILGUN_API_KEY", S("key-", HEX, 32), prefix="key-"),
        F("mailgun-private-key", "messaging", "MAILGUN_PRIVATE_KEY", lambda g: g.s(HEX, 32) + "-" + g.s(HEX, 8) + "-" + g.s(HEX, 8)),
        F("mailchimp-api-key", "messaging", "MAILCHIMP_API_KEY", lambda g: g.s(HEX, 32) + "-us" + str(g.r.randint(1, 21))),
        F("brevo-api-key", "messaging", "BREVO_API_KEY", lambda g: "xkeysib-" + g.s(HEX, 64) + "-" + g.s(AN, 16), prefix="xkeysib-"),
        F("mandrill-api-key", "messaging", "MANDRILL_API_KEY", S("md-", B64U, 22), prefix="md-"),
        F("teams-incoming-webhook-url", "messaging", "TEAMS_WEBHOOK_URL", lambda g: f"https://{g.word()}corp.webhook.office.com/webhookb2/{g.uuid()}@{g.uuid()}/IncomingWebhook/{g.s(HEX, 32)}/{g.uuid()}/V2{g.s(B64U, 43)}", "url"),
        F("intercom-access-token", "messaging", "INTERCOM_ACCESS_TOKEN", lambda g: b64(f"tok:{g.uuid()}:1:0".encode()).rstrip("="), prefix="dG9rOj"),
        F("vonage-api-secret", "messaging", "VONAGE_API_SECRET", S("", AN, 16)),
        F("pagerduty-api-key", "messaging", "PAGERDUTY_TOKEN", S("u+", B64U, 18), prefix="u+"),
        F("telnyx-api-key", "messaging", "TELNYX_API_KEY", lambda g: "KEY" + g.s(UHEX, 32) + "_" + g.s(AN, 22), prefix="KEY"),
        F("mattermost-access-token", "messaging", "MATTERMOST_TOKEN", S("", LAN, 26)),
        F("twitter-bearer-token", "saas", "TWITTER_BEARER_TOKEN", lambda g: "AAAAAAAAAAAAAAAAAAAAA" + g.s(AN, 20) + "%3D" + g.s(AN, 50), prefix="AAAAAAAAAAAAAAAAAAAAA"),
        F("facebook-access-token", "saas", "FACEBOOK_ACCESS_TOKEN", S("EAACEdEose0cBA", AN, 120), prefix="EAACEdEose0cBA"),
        # AI APIs
        F("openai-api-key-legacy", "ai", "OPENAI_API_KEY", lambda g: "sk-" + g.s(AN, 20) + "T3BlbkFJ" + g.s(AN, 20), prefix="sk-"),
        F("openai-project-key", "ai", "OPENAI_API_KEY", lambda g: "sk-proj-" + g.s(B64U, 74) + "T3BlbkFJ" + g.s(B64U, 74), prefix="sk-proj-"),
        F("openai-service-account-key", "ai", "OPENAI_API_KEY", lambda g: "sk-svcacct-" + g.s(B64U, 74) + "T3BlbkFJ" + g.s(B64U, 74), prefix="sk-svcacct-"),
        F("openai-admin-key", "ai", "OPENAI_ADMIN_KEY", lambda g: "sk-admin-" + g.s(B64U, 74) + "T3BlbkFJ" + g.s(B64U, 74), prefix="sk-admin-"),
        F("anthropic-api-key", "ai", "ANTHROPIC_API_KEY", lambda g: "sk-ant-api03-" + g.s(B64U, 93) + "AA", prefix="sk-ant-api03-"),
        F("anthropic-admin-key", "ai", "ANTHROPIC_ADMIN_KEY", lambda g: "sk-ant-admin01-" + g.s(B64U, 93) + "AA", prefix="sk-ant-admin01-"),
        F("cohere-api-key", "ai", "COHERE_API_KEY", S("", AN, 40)),
        F("mistral-api-key", "ai", "MISTRAL_API_KEY", S("", AN, 32)),
        F("groq-api-key", "ai", "GROQ_API_KEY", S("gsk_", AN, 52), prefix="gsk_"),
        F("replicate-api-token", "ai", "REPLICATE_API_TOKEN", S("r8_", AN, 37), prefix="r8_"),
        F("perplexity-api-key", "ai", "PERPLEXITY_API_KEY", S("pplx-", AN, 48), prefix="pplx-"),
        F("xai-api-key", "ai", "XAI_API_KEY", S("xai-", AN, 80), prefix="xai-"),
        F("deepseek-api-key", "ai", "DEEPSEEK_API_KEY", S("sk-", HEX, 32)),
        F("together-api-key", "ai", "TOGETHER_API_KEY", S("", HEX, 64)),
        F("langsmith-api-key", "ai", "LANGSMITH_API_KEY", lambda g: "lsv2_pt_" + g.s(HEX, 32) + "_" + g.s(HEX, 10), prefix="lsv2_pt_"),
        F("pinecone-api-key", "ai", "PINECONE_API_KEY", lambda g: "pcsk_" + g.s(AN, 5) + "_" + g.s(AN, 63), prefix="pcsk_"),
        F("openrouter-api-key", "ai", "OPENROUTER_API_KEY", S("sk-or-v1-", HEX, 64), prefix="sk-or-v1-"),
        F("fireworks-api-key", "ai", "FIREWORKS_API_KEY", S("fw_", AN, 24), prefix="fw_"),
        F("elevenlabs-api-key", "ai", "ELEVENLABS_API_KEY", S("sk_", HEX, 48), prefix="sk_"),
        F("assemblyai-api-key", "ai", "ASSEMBLYAI_API_KEY", S("", HEX, 32)),
        F("wandb-api-key", "ai", "WANDB_API_KEY", S("", HEX, 40)),
        # databases
        F("postgres-url", "database", "DATABASE_URL", lambda g: f"postgresql://orders_app:{g.s(AN, 24)}@pg-{g.word()}.prod.acmecorp.net:5432/orders?sslmode=require", "url"),
        F("mysql-url", "database", "MYSQL_URL", lambda g: f"mysql://root:{g.s(AN, 20)}@mysql-{g.word()}.internal:3306/shop", "url"),
        F("mongodb-srv-url", "database", "MONGODB_URI", lambda g: f"mongodb+srv://svc-reader:{g.s(AN, 22)}@cluster0.{g.s(LAN, 5)}.mongodb.net/analytics?retryWrites=true&w=majority", "url"),
        F("redis-url", "database", "REDIS_URL", lambda g: f"rediss://default:{g.s(AN, 32)}@redis-{g.word()}.cache.acmecorp.net:6380/0", "url"),
        F("amqp-url", "database", "RABBITMQ_URL", lambda g: f"amqps://events:{g.s(AN, 20)}@mq-{g.word()}.acmecorp.net:5671/prod", "url"),
        F("sqlserver-connection-string", "database", "SQLSERVER_CONNECTION",
          lambda g: f"Server=tcp:sql-{g.word()}.database.windows.net,1433;Database=ledger;User ID=ledger_rw;Password={g.s(AN, 18)}!;Encrypt=True;", "url"),
        F("jdbc-url-with-password", "database", "JDBC_URL", lambda g: f"jdbc:postgresql://pg-{g.word()}:5432/billing?user=billing&password={g.s(AN, 20)}", "url"),
        F("planetscale-password", "database", "PLANETSCALE_PASSWORD", S("pscale_pw_", B64U, 43), prefix="pscale_pw_"),
        F("planetscale-service-token", "database", "PLANETSCALE_SERVICE_TOKEN", S("pscale_tkn_", B64U, 43), prefix="pscale_tkn_"),
        F("neon-api-key", "database", "NEON_API_KEY", S("napi_", LAN, 64), prefix="napi_"),
        F("databricks-token", "database", "DATABRICKS_TOKEN", S("dapi", HEX, 32), prefix="dapi"),
        F("firebase-cloud-messaging-server-key", "messaging", "FCM_SERVER_KEY", lambda g: "AAAA" + g.s(B64U, 7) + ":APA91b" + g.s(B64U, 134), prefix="AAAA"),
        F("password-assignment", "generic", "DB_PASSWORD", S("", AN + "!@%^*-_", 22)),
        # private keys
        F("rsa-private-key", "private-key", "RSA_PRIVATE_KEY", key_rsa, "pem"),
        F("ec-private-key", "private-key", "EC_PRIVATE_KEY", key_ec, "pem"),
        F("pkcs8-private-key", "private-key", "PRIVATE_KEY", key_pkcs8, "pem"),
        F("pkcs8-encrypted-private-key", "private-key", "ENCRYPTED_PRIVATE_KEY", key_pkcs8_encrypted, "pem"),
        F("dsa-private-key", "private-key", "DSA_PRIVATE_KEY", key_dsa, "pem"),
        F("openssh-private-key", "private-key", "SSH_PRIVATE_KEY", key_openssh, "pem"),
        F("pgp-private-key-block", "private-key", "GPG_PRIVATE_KEY", key_pgp, "pem"),
        F("putty-private-key", "private-key", "PUTTY_KEY", key_putty, "pem"),
        F("age-secret-key", "private-key", "SOPS_AGE_KEY", age_key, prefix="AGE-SECRET-KEY-1"),
        F("ethereum-private-key", "private-key", "ETH_PRIVATE_KEY", S("0x", HEX, 64)),
        # observability
        F("datadog-api-key", "observability", "DD_API_KEY", S("", HEX, 32)),
        F("datadog-app-key", "observability", "DD_APP_KEY", S("", HEX, 40)),
        F("newrelic-user-api-key", "observability", "NEW_RELIC_API_KEY", S("NRAK-", UAN, 27), prefix="NRAK-"),
        F("newrelic-license-key", "observability", "NEW_RELIC_LICENSE_KEY", lambda g: g.s(HEX, 36) + "NRAL"),
        F("newrelic-insights-insert-key", "observability", "NEW_RELIC_INSERT_KEY", S("NRII-", B64U, 32), prefix="NRII-"),
        F("sentry-user-token", "observability", "SENTRY_AUTH_TOKEN", S("sntryu_", HEX, 64), prefix="sntryu_"),
        F("sentry-org-token", "observability", "SENTRY_ORG_TOKEN", lambda g: "sntrys_" + b64(json.dumps({"iat": 1760000000 + g.r.randint(0, 10**7), "url": "https://sentry.io", "region_url": "https://us.sentry.io", "org": g.word()}).encode()).rstrip("=") + "_" + g.s(AN + "+/", 43), prefix="sntrys_"),
        F("grafana-service-account-token", "observability", "GRAFANA_TOKEN", grafana_sa, prefix="glsa_"),
        F("grafana-cloud-token", "observability", "GRAFANA_CLOUD_TOKEN", lambda g: "glc_" + b64(json.dumps({"o": g.digits(6), "n": f"stack-{g.digits(6)}-hm-write", "k": g.s(AN, 24), "m": {"r": "prod-eu-west-2"}}, separators=(",", ":")).encode()), prefix="glc_eyJ"),
        F("dynatrace-api-token", "observability", "DT_API_TOKEN", lambda g: "dt0c01." + g.s(UAN, 24) + "." + g.s(UAN, 64), prefix="dt0c01."),
        F("honeycomb-api-key", "observability", "HONEYCOMB_API_KEY", S("hcaik_", LAN, 58), prefix="hcaik_"),
        F("rollbar-access-token", "observability", "ROLLBAR_ACCESS_TOKEN", S("", HEX, 32)),
        F("bugsnag-api-key", "observability", "BUGSNAG_API_KEY", S("", HEX, 32)),
        F("posthog-personal-api-key", "observability", "POSTHOG_PERSONAL_API_KEY", S("phx_", AN, 43), prefix="phx_"),
        F("launchdarkly-sdk-key", "observability", "LAUNCHDARKLY_SDK_KEY", lambda g: "sdk-" + g.uuid(), prefix="sdk-"),
        F("axiom-api-token", "observability", "AXIOM_TOKEN", lambda g: "xaat-" + g.uuid(), prefix="xaat-"),
        # SaaS
        F("notion-integration-token", "saas", "NOTION_TOKEN", S("secret_", AN, 43), prefix="secret_"),
        F("notion-token-ntn", "saas", "NOTION_API_KEY", lambda g: "ntn_" + g.digits(11) + g.s(AN, 35), prefix="ntn_"),
        F("airtable-pat", "saas", "AIRTABLE_TOKEN", lambda g: "pat" + g.s(AN, 14) + "." + g.s(HEX, 64), prefix="pat"),
        F("asana-pat", "saas", "ASANA_ACCESS_TOKEN", lambda g: f"2/{g.digits(16)}/{g.digits(16)}:{g.s(HEX, 32)}"),
        F("linear-api-key", "saas", "LINEAR_API_KEY", S("lin_api_", AN, 40), prefix="lin_api_"),
        F("figma-pat", "saas", "FIGMA_TOKEN", lambda g: "figd_" + g.s(B64U, 40), prefix="figd_"),
        F("hubspot-private-app-token", "saas", "HUBSPOT_ACCESS_TOKEN", lambda g: "pat-na1-" + g.uuid(), prefix="pat-na1-"),
        F("clickup-api-token", "saas", "CLICKUP_API_TOKEN", lambda g: "pk_" + g.digits(8) + "_" + g.s(UAN, 32), prefix="pk_"),
        F("typeform-pat", "saas", "TYPEFORM_TOKEN", lambda g: "tfp_" + g.s(B64U, 44) + "_" + g.s(AN, 14), prefix="tfp_"),
        F("contentful-pat", "saas", "CONTENTFUL_MANAGEMENT_TOKEN", S("CFPAT-", B64U, 43), prefix="CFPAT-"),
        F("postman-api-key", "saas", "POSTMAN_API_KEY", lambda g: "PMAK-" + g.s(HEX, 24) + "-" + g.s(HEX, 34), prefix="PMAK-"),
        F("dropbox-access-token", "saas", "DROPBOX_ACCESS_TOKEN", S("sl.", B64U, 135), prefix="sl."),
        F("mapbox-secret-token", "saas", "MAPBOX_SECRET_TOKEN", lambda g: "sk." + b64u(json.dumps({"u": g.word() + "corp", "a": "cl" + g.s(LAN, 23)}, separators=(",", ":")).encode()) + "." + g.s(B64U, 22), prefix="sk.eyJ"),
        F("algolia-admin-api-key", "saas", "ALGOLIA_ADMIN_API_KEY", S("", HEX, 32)),
        F("salesforce-access-token", "saas", "SALESFORCE_ACCESS_TOKEN", lambda g: "00D" + g.s(AN, 12) + "!" + g.s(AN + ".", 96), prefix="00D"),
        F("frameio-token", "saas", "FRAMEIO_TOKEN", S("fio-u-", B64U, 64), prefix="fio-u-"),
        F("readme-api-key", "saas", "README_API_KEY", S("rdme_", LAN, 70), prefix="rdme_"),
        F("prefect-api-key", "saas", "PREFECT_API_KEY", S("pnu_", AN, 36), prefix="pnu_"),
        F("adafruit-io-key", "saas", "ADAFRUIT_IO_KEY", S("aio_", AN, 28), prefix="aio_"),
        F("cloudinary-url", "saas", "CLOUDINARY_URL", lambda g: f"cloudinary://{g.digits(15)}:{g.s(B64U, 27)}@{g.word()}corp", "url"),
        F("zendesk-api-token", "saas", "ZENDESK_API_TOKEN", S("", AN, 40)),
        # generic shapes
        F("jwt", "generic", "AUTH_TOKEN", jwt, prefix="eyJ"),
        F("basic-auth-credential", "generic", "BASIC_AUTH", lambda g: b64(f"deploy:{g.s(AN, 20)}".encode()), kind="basic"),
        F("url-with-password", "generic", "UPSTREAM_URL", lambda g: f"https://svc-{g.word()}:{g.s(AN, 20)}@git.acmecorp.net/platform/infra.git", "url"),
        F("django-secret-key", "generic", "DJANGO_SECRET_KEY", S("django-insecure-", LAN + "!@%^&*(-_=+)", 50), prefix="django-insecure-"),
        F("rails-secret-key-base", "generic", "SECRET_KEY_BASE", S("", HEX, 128)),
        F("laravel-app-key", "generic", "APP_KEY", lambda g: "base64:" + b64(g.b(32)), prefix="base64:"),
        F("generic-api-secret", "generic", "API_SECRET", S("", AN, 32)),
        F("generic-client-secret", "generic", "CLIENT_SECRET", S("", B64U, 48)),
    ]
    ids = [f["id"] for f in fs]
    assert len(ids) == len(set(ids)), "duplicate format id"
    return fs


# ---- file contexts ---------------------------------------------------------------------------


def snake(var):
    return var.lower()


def camel(var):
    parts = var.lower().split("_")
    return parts[0] + "".join(p.title() for p in parts[1:])


def dotted(var):
    return var.lower().replace("_", ".")


def needs_quotes_sh(value):
    return any(c in value for c in "&;$!()*^%|<>?'\" ")


def sh_value(value):
    return "'" + value + "'" if needs_quotes_sh(value) else value


def xml_escape(value):
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def C_py(var, v, code=False):
    rhs = v if code else f'"{v}"'
    return "settings.py", ['"""Settings for the billing worker."""', "import logging", "import os", "",
                            "log = logging.getLogger(__name__)", "", "TIMEOUT_SECONDS = 30",
                            f"{var} = {rhs}", "", "", "def client_options():",
                            f"    return {{\"timeout\": TIMEOUT_SECONDS, \"key\": {var}}}"], 7


def C_js(var, v, code=False):
    rhs = v if code else f"'{v}'"
    return "config.js", ["'use strict';", "", "const path = require('path');", "", "module.exports = {",
                          "  root: path.join(__dirname, '..'),", f"  {camel(var)}: {rhs},", "  retries: 3,",
                          "};"], 6


def C_go(var, v, code=False):
    if code:
        return "config.go", ["package config", "", 'import "os"', "", "// Settings of the client.", "var (",
                              '\tbaseURL = "https://api.acmecorp.net"', f"\t{camel(var)} = {v}", ")", "",
                              "func BaseURL() string { return baseURL }"], 7
    return "config.go", ["package config", "", "// Settings of the client.", "const (",
                          '\tbaseURL = "https://api.acmecorp.net"', f'\t{camel(var)} = "{v}"', ")", "",
                          "func BaseURL() string { return baseURL }"], 5


def C_java(var, v, code=False):
    rhs = v if code else f'"{v}"'
    return "AppConfig.java", ["package net.acmecorp.billing;", "", "public final class AppConfig {",
                              '    static final String BASE_URL = "https://api.acmecorp.net";',
                              f"    static final String {var} = {rhs};", "", "    private AppConfig() {}",
                              "}"], 4


def C_env(var, v, code=False):
    return ".env", ["# runtime settings", "APP_ENV=production", "LOG_LEVEL=info", f"{var}={v}",
                    "PORT=8080"], 3


def C_yaml(var, v, code=False):
    return "config.yaml", ["app:", "  name: billing", "  client:", "    endpoint: https://api.acmecorp.net",
                           f"    {snake(var)}: {v}", "    timeout: 30"], 4


def C_compose(var, v, code=False):
    return "docker-compose.yml", ["services:", "  worker:", "    image: registry.acmecorp.net/worker:1.4",
                                  "    environment:", "      - LOG_LEVEL=info", f"      - {var}={v}",
                                  "    restart: unless-stopped"], 5


def C_compose_map(var, v, code=False):
    return "compose.yaml", ["services:", "  api:", "    build: .", "    environment:",
                            "      LOG_LEVEL: info", f"      {var}: {v}", "    ports:", '      - "8080:8080"'], 5


def C_json(var, v, code=False):
    return "settings.json", ["{", '  "service": "billing",', '  "endpoint": "https://api.acmecorp.net",',
                             f'  "{camel(var)}": "{v}",', '  "retries": 3', "}"], 3


def C_ini(var, v, code=False):
    return "config.ini", ["[default]", "region = eu-west-1", "", "[client]", f"{snake(var)} = {v}",
                          "timeout = 30"], 4


def C_toml(var, v, code=False):
    return "config.toml", ["[server]", "port = 8080", "", "[client]", f'{snake(var)} = "{v}"',
                           "timeout = 30"], 4


def C_properties(var, v, code=False):
    return "application.properties", ["server.port=8080", "spring.application.name=billing",
                                       f"{dotted(var)}={v}", "logging.level.root=INFO"], 2


def C_shell(var, v, code=False):
    return "deploy.sh", ["#!/usr/bin/env bash", "set -euo pipefail", "", f"export {var}={sh_value(v)}",
                         'exec ./bin/worker "$@"'], 3


def C_hcl(var, v, code=False):
    return "main.tf", ['provider "acme" {', '  region = "eu-west-1"', f'  {snake(var)} = "{v}"', "}", "",
                       'resource "acme_bucket" "logs" {', '  name = "logs"', "}"], 2


def C_xml_attr(var, v, code=False):
    return "app.config", ['<?xml version="1.0" encoding="utf-8"?>', "<configuration>", "  <appSettings>",
                          '    <add key="Environment" value="production" />',
                          f'    <add key="{var}" value="{xml_escape(v)}" />', "  </appSettings>",
                          "</configuration>"], 4


def C_xml_elem(var, v, code=False):
    return "settings.xml", ['<?xml version="1.0" encoding="UTF-8"?>', "<settings>", "  <client>",
                            "    <endpoint>https://api.acmecorp.net</endpoint>",
                            f"    <{camel(var)}>{xml_escape(v)}</{camel(var)}>", "  </client>", "</settings>"], 4


def C_http(var, v, code=False, scheme="Bearer"):
    return "requests.http", ["### List invoices", "GET https://api.acmecorp.net/v1/invoices?limit=20",
                             f"Authorization: {scheme} {v}", "Accept: application/json", ""], 2


def C_curl(var, v, code=False, scheme="Bearer"):
    return "call-api.sh", ["#!/bin/sh", "# Fetch the current account.", "curl -fsS \\",
                           f"  -H 'Authorization: {scheme} {v}' \\", "  https://api.acmecorp.net/v1/account"], 3


CONTEXTS = {
    "python": C_py, "javascript": C_js, "go": C_go, "java": C_java, "dotenv": C_env, "yaml": C_yaml,
    "compose-list": C_compose, "compose-map": C_compose_map, "json": C_json, "ini": C_ini,
    "toml": C_toml, "properties": C_properties, "shell-export": C_shell, "hcl": C_hcl,
    "xml-attribute": C_xml_attr, "xml-element": C_xml_elem, "http-header": C_http,
    "curl-header": C_curl,
}
HEADER_CONTEXTS = {"http-header", "curl-header"}


def pem_contexts(var, block, fid):
    """Multi-line blocks: (context, filename, lines, first line index, last line index)."""
    name = {"openssh-private-key": "id_ed25519", "putty-private-key": "deploy.ppk",
            "pgp-private-key-block": "signing-key.asc"}.get(fid, "server.key")
    out = [("key-file", name, list(block), 0, len(block) - 1)]
    py = ['"""TLS material for the gateway."""', "", f'{var} = """'] + block + ['"""', ""]
    out.append(("python", "keys.py", py, 3, 2 + len(block)))
    yml = ["tls:", "  enabled: true", f"  {snake(var)}: |"] + ["    " + l for l in block] + ["  verify: true"]
    out.append(("yaml-block", "values.yaml", yml, 3, 2 + len(block)))
    if not fid.startswith("putty"):
        esc = "\\n".join(block) + "\\n"
        js = ["{", '  "type": "service_account",', '  "project_id": "billing-prod",',
              f'  "private_key": "{esc}",', '  "client_email": "deployer@billing-prod.iam.gserviceaccount.com"', "}"]
        out.append(("json-escaped", "credentials.json", js, 3, 3))
    return out


def choose_contexts(i, kind):
    names = list(CONTEXTS)
    if kind == "url":
        names = [n for n in names if n not in HEADER_CONTEXTS]
    k = 5
    step = len(names)
    start = (i * k) % step
    return [names[(start + j) % step] for j in range(k)]


# ---- negatives -------------------------------------------------------------------------------

PLACEHOLDERS = [
    ("placeholder-env-reference", None),
    ("placeholder-template-variable", "${{VAR}}"),
    ("placeholder-changeme", "changeme"),
    ("placeholder-xxxx", "xxxxxxxxxxxxxxxxxxxxxxxx"),
    ("placeholder-angle-brackets", "<your-api-key>"),
    ("placeholder-example", "example"),
    ("placeholder-your-key-here", "YOUR_API_KEY_HERE"),
    ("placeholder-empty", ""),
    ("placeholder-helm-template", "{{ .Values.credentials.token }}"),
    ("placeholder-ci-secret-reference", "${{ secrets.VAR }}"),
    ("placeholder-redacted-stars", "************"),
    ("placeholder-vault-reference", "vault:secret/data/billing#VAR"),
]


def env_reference(ctx, var):
    return {"python": f'os.environ["{var}"]', "javascript": f"process.env.{var}",
            "go": f'os.Getenv("{var}")', "java": f'System.getenv("{var}")'}.get(ctx)


NEUTRAL_VARS = ["fixture_ref", "build_label", "cache_namespace", "trace_tag", "route_name", "sample_id"]


def negatives(g, fs):
    """Yields (kind, filename, lines)."""
    names = list(CONTEXTS)
    n = 0
    # placeholders and references, each in 8 contexts, under the variable names of real formats
    for pk, value in PLACEHOLDERS:
        for j in range(8):
            f = fs[(n * 7) % len(fs)]
            if f["kind"] == "pem":
                f = fs[0]
            ctx = names[(n + j * 3) % len(names)]
            n += 1
            var = f["var"]
            if pk == "placeholder-env-reference":
                expr = env_reference(ctx, var)
                if expr:
                    name, lines, _ = CONTEXTS[ctx](var, expr, code=True)
                else:
                    name, lines, _ = CONTEXTS[ctx](var, "${" + var + "}")
            else:
                val = value.replace("VAR", var)
                if ctx in HEADER_CONTEXTS and not val:
                    val = "$" + var
                name, lines, _ = CONTEXTS[ctx](var, val)
            yield pk, name, lines
    # look-alikes: right prefix, wrong length (prefix + 8 characters)
    # (every third format with a prefix of 3 or more characters, so that this easy kind does not
    # make up most of the negative files)
    prefixed = [f for f in fs if f["prefix"] and len(f["prefix"]) >= 3][::3]
    for i, f in enumerate(prefixed):
        ctx = ["python", "javascript", "go", "java", "json", "yaml", "toml", "hcl"][i % 8]
        val = f["prefix"] + g.s(LAN, 8)
        name, lines, _ = CONTEXTS[ctx](NEUTRAL_VARS[i % len(NEUTRAL_VARS)].upper(), val)
        yield "lookalike-wrong-length", name, lines
    # look-alikes: right prefix and length, wrong alphabet
    wrong_alpha = [
        ("AKIA", lambda: "AKIA" + g.s("abcdefghjk0189", 16)),
        ("dop_v1_", lambda: "dop_v1_" + g.s("ghijklmnopqrstuvwxyz", 64)),
        ("shpat_", lambda: "shpat_" + g.s("ghijklmnopqrstuvwxyz", 32)),
        ("sntryu_", lambda: "sntryu_" + g.s("GHIJKLMNOPQRSTUVWXYZ", 64)),
        ("glptt-", lambda: "glptt-" + g.s("ghijklmnopqrstuvwxyz", 40)),
        ("NRAK-", lambda: "NRAK-" + g.s("abcdefghijklmnopqrstuvwxyz", 27)),
        ("squ_", lambda: "squ_" + g.s("ghijklmnopqrstuvwxyz", 40)),
        ("rubygems_", lambda: "rubygems_" + g.s("GHIJKLMNOPQRSTUVWXYZ", 48)),
    ]
    for i, (_, mk) in enumerate(wrong_alpha):
        ctx = ["python", "json", "yaml", "go"][i % 4]
        name, lines, _ = CONTEXTS[ctx](NEUTRAL_VARS[i % len(NEUTRAL_VARS)].upper(), mk())
        yield "lookalike-wrong-alphabet", name, lines
    # look-alikes: right prefix, length and alphabet, wrong checksum
    for i, prefix in enumerate(["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "npm_", "ghp_", "npm_"]):
        body = g.s(AN, 30)
        good = crc32_base62(body)
        bad = good[:-1] + ("0" if good[-1] != "0" else "1")
        ctx = ["python", "javascript", "json", "yaml"][i % 4]
        name, lines, _ = CONTEXTS[ctx](NEUTRAL_VARS[i % len(NEUTRAL_VARS)].upper(), prefix + body + bad)
        yield "lookalike-wrong-checksum", name, lines
    for i in range(3):
        name, lines, _ = CONTEXTS[["python", "yaml", "toml"][i]](NEUTRAL_VARS[i].upper(), age_key(g, bad_checksum=True))
        yield "lookalike-wrong-checksum", name, lines
    for i in range(3):
        name, lines, _ = CONTEXTS[["json", "go", "hcl"][i]](NEUTRAL_VARS[i].upper(), grafana_sa(g, bad_checksum=True))
        yield "lookalike-wrong-checksum", name, lines
    # UUIDs in code
    for i in range(6):
        lines = ["import uuid", "", "# Stable ids of the built-in roles.", f'ADMIN_ROLE_ID = "{g.uuid()}"',
                 f'READER_ROLE_ID = uuid.UUID("{g.uuid()}")', f'TENANT_NAMESPACE = "{g.uuid()}"']
        yield "uuid", "roles.py", lines
    # git SHAs
    for i in range(4):
        lines = ["# Changelog", "", "## 2.4.1", ""] + [
            f"- {g.s(HEX, 40)} fix retry on 429 ({g.s(HEX, 7)})" for _ in range(6)]
        yield "git-sha", "CHANGELOG.md", lines
        yield "git-sha", ".gitmodules", ['[submodule "vendor/proto"]', "\tpath = vendor/proto",
                                          "\turl = https://github.com/acmecorp/proto.git",
                                          f"# pinned at {g.s(HEX, 40)}"]
    # hashes in lockfiles
    for i in range(3):
        yield "lockfile-hash", "requirements.txt", sum(
            ([f"{p}==1.{i}.{j} \\", f"    --hash=sha256:{g.s(HEX, 64)} \\", f"    --hash=sha256:{g.s(HEX, 64)}"]
             for j, p in enumerate(["requests", "urllib3", "idna", "certifi"])), [])
        yield "lockfile-hash", "go.sum", [f"github.com/acmecorp/{w} v1.{j}.0 h1:{b64(g.b(32))}"
                                          for j, w in enumerate(["log", "retry", "cfg", "auth"])]
        yield "lockfile-hash", "pnpm-lock.yaml", ["lockfileVersion: '9.0'", "", "packages:", ""] + sum(
            ([f"  {p}@4.{j}.0:", f"    resolution: {{integrity: sha512-{b64(g.b(64))}}}", ""]
             for j, p in enumerate(["lodash", "chalk", "debug"])), [])
        yield "lockfile-hash", "composer.lock", ["{", f'    "content-hash": "{g.s(HEX, 32)}",',
                                                 '    "packages": [', "        {", '            "name": "monolog/monolog",',
                                                 f'            "dist": {{"type": "zip", "shasum": "{g.s(HEX, 40)}", "reference": "{g.s(HEX, 40)}"}}',
                                                 "        }", "    ]", "}"]
    # base64 images
    for i in range(4):
        png = b"\x89PNG\r\n\x1a\n" + g.b(600)
        yield "base64-image", "logo.css", [".logo {", f"  background-image: url(data:image/png;base64,{b64(png)});", "}"]
        yield "base64-image", "icon.html", ["<!doctype html>", f'<img alt="logo" src="data:image/png;base64,{b64(png)}">']
    # random identifiers in code, integrity hashes, digests
    for i in range(4):
        yield "random-identifier", "chunks.js", ["const chunkHashes = {"] + [
            f'  "{g.word()}": "{g.s(HEX, 20)}",' for _ in range(6)] + ["};", "export default chunkHashes;"]
        yield "random-identifier", "styles.module.ts", [f'export const button = "Button_button__{g.s(B64U, 5)}";',
                                                        f'export const card = "Card_card__{g.s(B64U, 5)}";']
        yield "sri-hash", "index.html", ["<!doctype html>", f'<script src="/app.js" integrity="sha384-{b64(g.b(48))}" crossorigin="anonymous"></script>']
        yield "image-digest", "deployment.yaml", ["spec:", "  containers:", "    - name: api",
                                                  f"      image: registry.acmecorp.net/api@sha256:{g.s(HEX, 64)}"]
        yield "checksum-constant", "verify.py", ["import hashlib", "",
                                                 f'EXPECTED_SHA256 = "{g.s(HEX, 64)}"',
                                                 "", "def ok(data):", "    return hashlib.sha256(data).hexdigest() == EXPECTED_SHA256"]
        yield "publishable-key", "checkout.js", [f"const stripe = Stripe('pk_live_{g.s(AN, 99)}');"]
    # public keys and certificates
    for i in range(3):
        yield "public-key-pem", "jwt-public.pem", pem("PUBLIC KEY", der_seq(der_seq(oid("1.2.840.113549.1.1.1"), der(0x05, b"")), der(0x03, b"\0" + der_seq(der_int(g.b(256)), der_int(b"\x01\x00\x01")))))
        yield "certificate-pem", "ca.crt", pem("CERTIFICATE", der_seq(der_seq(der_int(g.b(16))), der(0x03, b"\0" + g.b(256))))
        yield "ssh-public-key", "authorized_keys", [f"ssh-ed25519 {b64(ssh_string(b'ssh-ed25519') + ssh_string(g.b(32)))} ops@bastion"]
    # documentation with redacted or documented example values
    docs = [
        ["# Configuration", "", "Set your token:", "", "```sh", "export GITHUB_TOKEN=ghp_************************************", "```"],
        ["# Stripe", "", "Use a key of the form `sk_live_...` from the dashboard:", "", "```", "STRIPE_SECRET_KEY=sk_live_<your key>", "```"],
        ["# AWS", "", "The documentation's example credentials:", "", "```ini", "[default]",
         "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "```"],
        ["# Slack", "", "Bot tokens start with `xoxb-`; put yours in `SLACK_BOT_TOKEN=xoxb-xxxxxxxxxxxx-xxxxxxxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx`."],
        ["# TLS", "", "Paste the key as:", "", "```", "-----BEGIN PRIVATE KEY-----", "...", "-----END PRIVATE KEY-----", "```"],
        ["# OpenAI", "", "```python", 'client = OpenAI(api_key="sk-...")', "```", "", "Never commit the key; read it from `OPENAI_API_KEY`."],
        ["# Database", "", "```", "DATABASE_URL=postgresql://user:password@localhost:5432/app", "```"],
        ["# Webhooks", "", "`https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX`"],
    ]
    for d in docs:
        yield "documentation-redacted", "README.md", d


# ---- writing ---------------------------------------------------------------------------------


def build(out):
    g = Gen(SEED)
    fs = formats()
    corpus = os.path.join(out, "corpus")
    positives, negs = [], []

    def write(rel, lines):
        path = os.path.join(corpus, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(lines) + "\n")

    n = 0
    for i, f in enumerate(fs):
        if f["kind"] == "pem":
            block = f["gen"](g)
            for ctx, name, lines, a, b in pem_contexts(f["var"], block, f["id"]):
                n += 1
                rel = f"pos/{n:04d}/{name}"
                write(rel, lines)
                positives.append({"file": rel, "line_start": a + 1, "line_end": b + 1,
                                  "format": f["id"], "category": f["category"], "context": ctx})
            continue
        for ctx in choose_contexts(i, f["kind"]):
            value = f["gen"](g)
            if ctx in HEADER_CONTEXTS:
                scheme = "Basic" if f["kind"] == "basic" else "Bearer"
                name, lines, at = CONTEXTS[ctx](f["var"], value, scheme=scheme)
            else:
                name, lines, at = CONTEXTS[ctx](f["var"], value)
            n += 1
            rel = f"pos/{n:04d}/{name}"
            write(rel, lines)
            positives.append({"file": rel, "line_start": at + 1, "line_end": at + 1,
                              "format": f["id"], "category": f["category"], "context": ctx})
    for j, (kind, name, lines) in enumerate(negatives(g, fs)):
        rel = f"neg/{j + 1:04d}/{name}"
        write(rel, lines)
        negs.append({"file": rel, "kind": kind})
    labels = {"seed": SEED, "formats": [{"id": f["id"], "category": f["category"]} for f in fs],
              "positives": positives, "negatives": negs}
    with open(os.path.join(out, "labels.json"), "w", encoding="utf-8") as fh:
        json.dump(labels, fh, indent=1)
    return labels


NEGATIVE_KINDS = [k for k, _ in PLACEHOLDERS] + [
    "lookalike-wrong-length", "lookalike-wrong-alphabet", "lookalike-wrong-checksum", "uuid", "git-sha",
    "lockfile-hash", "base64-image", "random-identifier", "sri-hash", "image-digest", "checksum-constant",
    "publishable-key", "public-key-pem", "certificate-pem", "ssh-public-key", "documentation-redacted"]


def self_check(out, labels):
    problems = []
    if len(labels["formats"]) < 150:
        problems.append(f"only {len(labels['formats'])} formats (need >= 150)")
    contexts = {}
    for p in labels["positives"]:
        contexts.setdefault(p["format"], set()).add(p["context"])
        path = os.path.join(out, "corpus", p["file"])
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        if not (1 <= p["line_start"] <= p["line_end"] <= len(lines)) or not lines[p["line_start"] - 1].strip():
            problems.append(f"{p['file']}: label points at no content")
    for f in labels["formats"]:
        if len(contexts.get(f["id"], ())) < 3:
            problems.append(f"format {f['id']} in {len(contexts.get(f['id'], ()))} file contexts (need >= 3)")
    used = {c for cs in contexts.values() for c in cs}
    for ctx in CONTEXTS:
        if ctx not in used:
            problems.append(f"context {ctx} unused")
    kinds = {x["kind"] for x in labels["negatives"]}
    for k in NEGATIVE_KINDS:
        if k not in kinds:
            problems.append(f"negative kind {k} missing")
    # the checksums computed above are what they claim to be
    g = Gen(1)
    tok = github_style(g, "ghp_")
    if crc32_base62(tok[4:34]) != tok[34:]:
        problems.append("github checksum")
    tok = grafana_sa(g)
    if (zlib.crc32(tok[:37].encode()) & 0xFFFFFFFF).to_bytes(4, "little").hex() != tok[38:]:
        problems.append("grafana checksum")
    key = age_key(g).lower()
    hrp, data = key.rsplit("1", 1)
    vals = [BECH32.index(c) for c in data]
    if bech32_polymod([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + vals) != 1:
        problems.append("age bech32 checksum")
    for p in labels["positives"]:
        if p["format"].endswith("private-key") and p["context"] == "key-file":
            with open(os.path.join(out, "corpus", p["file"]), encoding="utf-8") as fh:
                body = [l for l in fh.read().splitlines()
                        if l and not l.startswith(("-----", "=")) and ": " not in l]
            try:
                binascii.a2b_base64("".join(body))
            except binascii.Error:
                problems.append(f"{p['file']}: PEM body does not decode")
    for p in problems:
        print("self-check:", p, file=sys.stderr)
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (corpus/ and labels.json)")
    ap.add_argument("--self-check", action="store_true",
                    help="also check that every format is in >= 3 file contexts and every negative kind is present")
    args = ap.parse_args()
    if os.path.exists(os.path.join(args.out, "corpus")):
        ap.error(f"{args.out}/corpus exists; give an empty or new directory")
    labels = build(args.out)
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fns in os.walk(os.path.join(args.out, "corpus")) for f in fns)
    print(f"{len(labels['formats'])} formats, {len(labels['positives'])} positive files, "
          f"{len(labels['negatives'])} negative files, {size} bytes in {args.out}/corpus", file=sys.stderr)
    if args.self_check:
        if not self_check(args.out, labels):
            sys.exit(1)
        print("self-check: ok", file=sys.stderr)


if __name__ == "__main__":
    main()
