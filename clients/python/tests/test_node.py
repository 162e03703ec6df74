"""Cross-language tests against a real custos node. They run when
clients/python/python_test.go (go test ./clients/python/) starts a node and
sets CUSTOS_* plus CUSTOS_PYTEST_DIR (a work directory shared with the Go
side) and CUSTOS_PYTEST_KEY (a key created by the same client certificate);
otherwise they are skipped. Each test writes CUSTOS_PYTEST_DIR/ok-<name>
when it passes, which the Go side checks."""

import os
import unittest

import _path  # noqa: F401  (sets sys.path)

import custos

WORK = os.environ.get("CUSTOS_PYTEST_DIR", "")
KEY = os.environ.get("CUSTOS_PYTEST_KEY", "")
JUST = custos.Justification("customer-initiated", "clients/python cross-language test", "PY-1")


@unittest.skipUnless(WORK and KEY, "no custos node (run: go test ./clients/python/)")
class NodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = custos.connect()  # from CUSTOS_*

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def ok(self, name):
        with open(os.path.join(WORK, "ok-" + name), "w") as f:
            f.write("ok\n")

    def path(self, name):
        return os.path.join(WORK, name)

    def test_decrypt_go_file(self):
        """Go EncryptFile wrote go.cste from plain.bin."""
        out = self.path("go.out")
        h = self.client.decrypt_file(self.path("go.cste"), out, JUST, expected_context={"lang": "go"})
        self.assertEqual(h.key, KEY)
        with open(out, "rb") as a, open(self.path("plain.bin"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        # A tampered copy raises and leaves no plaintext file behind.
        with open(self.path("go.cste"), "rb") as f:
            ct = bytearray(f.read())
        ct[len(ct) // 2] ^= 0x40
        with open(self.path("bad.cste"), "wb") as f:
            f.write(ct)
        with self.assertRaises(custos.DecryptionError):
            self.client.decrypt_file(self.path("bad.cste"), self.path("bad.out"), JUST)
        with open(self.path("trunc.cste"), "wb") as f:
            f.write(ct[:len(ct) - 5000])
        with self.assertRaises(custos.DecryptionError):
            self.client.decrypt_file(self.path("trunc.cste"), self.path("bad.out"), JUST)
        leftovers = [n for n in os.listdir(WORK) if n.startswith("bad.out") or n.startswith(".bad.out")]
        self.assertEqual(leftovers, [])
        with self.assertRaises(custos.ContextMismatchError):
            self.client.decrypt_file(self.path("go.cste"), self.path("bad.out"), JUST,
                                     expected_context={"lang": "python"})
        self.ok("decrypt_go_file")

    def test_encrypt_for_go(self):
        """Writes py.cste from plain.bin for Go DecryptFile."""
        h = self.client.encrypt_file(self.path("plain.bin"), self.path("py.cste"), KEY,
                                     {"lang": "python", "地域": "東京"}, segment_size=4096)
        self.assertEqual(h.key, KEY)
        self.assertGreaterEqual(h.key_version, 1)
        # And back in Python, through the streaming API.
        import io
        out = io.BytesIO()
        with open(self.path("py.cste"), "rb") as src:
            self.client.decrypt_stream(src, out, JUST)
        with open(self.path("plain.bin"), "rb") as f:
            self.assertEqual(out.getvalue(), f.read())
        self.ok("encrypt_for_go")

    def test_data_key_round_trip(self):
        # KEY releases only to signed requests: this client signs.
        self.assertTrue(self.client.signs_requests)
        ctx = {"tenant": "acme", "purpose": "python"}
        with self.client.generate_data_key(KEY, ctx) as dk:
            self.assertEqual(dk.key, KEY)
            self.assertEqual(len(dk.plaintext), 32)
            got = self.client.decrypt_data_key(dk.wrapped, ctx, JUST)
            self.assertEqual(bytes(got), bytes(dk.plaintext))
            # The context is bound: another one is refused.
            with self.assertRaises(custos.RPCError) as cm:
                self.client.decrypt_data_key(dk.wrapped, {"tenant": "other"}, JUST)
            self.assertNotEqual(cm.exception.code_name, "OK")
        # A key created from Python is usable from Python.
        name = KEY + "-py"
        k = self.client.create_key(name, "created by the Python client")
        self.assertEqual(k.name, name)
        self.assertIn(name, [x.name for x in self.client.list_keys()])
        dk = self.client.generate_data_key(name)
        self.assertEqual(bytes(self.client.decrypt_data_key(dk.wrapped, None, JUST)), bytes(dk.plaintext))
        # gRPC errors carry the status code name.
        with self.assertRaises(custos.RPCError) as cm:
            self.client.generate_data_key("no-such-key-" + name)
        self.assertEqual(cm.exception.code_name, "NOT_FOUND")
        self.assertIn("NOT_FOUND", str(cm.exception))
        self.ok("data_key_round_trip")

    def test_unspecified_reason(self):
        """A decrypt without a reason is recorded as UNSPECIFIED, which the
        default policy sends to the officers like THIRD_PARTY_DATA_REQUEST:
        it is not allowed as if it were CUSTOMER_INITIATED. The Go side
        reads the record."""
        with self.client.generate_data_key(KEY) as dk:
            with self.assertRaises(custos.RPCError) as cm:
                self.client.decrypt_data_key(dk.wrapped, None, custos.Justification(text="no reason given"))
        self.assertEqual(cm.exception.code_name, "FAILED_PRECONDITION")
        self.assertIn("approv", cm.exception.details)
        self.ok("unspecified_reason")


if __name__ == "__main__":
    unittest.main()
