"""Offline tests of the client helpers: configuration and reasons."""

import unittest

import _path  # noqa: F401  (sets sys.path)

import custos


class ConfigTest(unittest.TestCase):
    def test_from_env(self):
        cfg = custos.Config.from_env({"CUSTOS_ADDR": " a:1, ,b:2 ", "CUSTOS_CA": "ca.pem",
                                      "CUSTOS_CERT": "c.pem", "CUSTOS_KEY": "k.pem"})
        self.assertEqual(cfg.addrs, ["a:1", "b:2"])
        self.assertEqual((cfg.ca_file, cfg.cert_file, cfg.key_file), ("ca.pem", "c.pem", "k.pem"))

    def test_from_env_missing(self):
        with self.assertRaises(custos.ConfigError) as cm:
            custos.Config.from_env({"CUSTOS_ADDR": "a:1", "CUSTOS_CA": " "})
        self.assertIn("CUSTOS_CA, CUSTOS_CERT, CUSTOS_KEY are not set", str(cm.exception))
        with self.assertRaises(custos.ConfigError):
            custos.Config.from_env({"CUSTOS_ADDR": ",", "CUSTOS_CA": "x", "CUSTOS_CERT": "y", "CUSTOS_KEY": "z"})

    def test_unreadable_files(self):
        with self.assertRaises(custos.ConfigError):
            custos.Client(custos.Config(addrs=["a:1"], ca_file="/nonexistent", cert_file="x", key_file="y"))


class ReasonTest(unittest.TestCase):
    def test_parse(self):
        for s in ("CUSTOMER_INITIATED", "customer-initiated", "REASON_CUSTOMER_INITIATED", " Customer_Initiated "):
            self.assertEqual(custos.parse_reason(s), 1)
        self.assertEqual(custos.parse_reason("emergency"), 6)
        self.assertEqual(custos.parse_reason(3), 3)
        for bad in ("UNSPECIFIED", "REASON_UNSPECIFIED", "nope", 0, 99):
            with self.assertRaises(ValueError):
                custos.parse_reason(bad)
        self.assertEqual(custos.reason_names()[0], "CUSTOMER_INITIATED")
        self.assertEqual(custos.reason_string(6), "EMERGENCY")

    def test_justification(self):
        j = custos.Justification("third-party-data-request", "why", "T-1")
        self.assertEqual(j.reason, 5)
        p = j.to_proto()
        self.assertEqual((p.reason, p.text, p.ticket), (5, "why", "T-1"))
        with self.assertRaises(ValueError):
            custos.Justification("bogus")

    def test_justification_without_reason(self):
        """No reason is sent as REASON_UNSPECIFIED, never as a reason the
        caller did not give (the Go client's zero Reason does the same)."""
        for j in (custos.Justification(), custos.Justification(None, "why")):
            self.assertEqual(j.reason, 0)
            self.assertEqual(j.to_proto().reason, 0)
        self.assertEqual(custos.Justification(text="t").to_proto().text, "t")


class RequestSignatureTest(unittest.TestCase):
    """The signed-request message is the Go one, byte for byte
    (kms/requestsig/testdata/vector.json), and a Python signature verifies
    as the nodes verify it."""

    def test_vector(self):
        import json
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from custos import requestsig
        with open(_path.REQUEST_VECTOR) as f:
            v = json.load(f)
        self.assertEqual(custos.envelope.context_digest(v["context"]).hex(), v["context_digest"])
        ct = bytes.fromhex(v["ciphertext"])
        self.assertEqual(requestsig.header_of(ct).hex(), v["header"])
        msg = requestsig.message(v["method"], requestsig.header_of(ct), __import__("hashlib").sha256(ct).digest(),
                                 bytes.fromhex(v["context_digest"]), v["reason"], v["text"], v["ticket"],
                                 bytes.fromhex(v["nonce"]), v["time_unix_nano"])
        self.assertEqual(msg.hex(), v["message"])
        pub = serialization.load_der_public_key(bytes.fromhex(v["public_key_pkix"]))
        pub.verify(bytes.fromhex(v["signature"]), msg, ec.ECDSA(hashes.SHA256()))

        key = ec.generate_private_key(ec.SECP256R1())
        j = custos.Justification("customer-initiated", "why", "T-1")
        cd = custos.envelope.context_digest({"a": "b"})
        ct = bytes([1, 1, 1]) + b"k" + bytes([0, 0, 0, 1]) + b"iv and ciphertext"
        sig = requestsig.sign(key, requestsig.METHOD_DECRYPT, ct, cd, j)
        self.assertEqual(len(sig.nonce), 16)
        key.public_key().verify(sig.signature, requestsig.message(
            "Decrypt", ct[:8], __import__("hashlib").sha256(ct).digest(), cd, 1, "why", "T-1", sig.nonce,
            sig.time_unix_nano), ec.ECDSA(hashes.SHA256()))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self.assertIsNotNone(requestsig.signer_from_pem(pem))
        self.assertIsNone(requestsig.signer_from_pem(b"not a key"))


if __name__ == "__main__":
    unittest.main()
