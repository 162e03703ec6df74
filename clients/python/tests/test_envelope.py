"""Offline tests of the envelope format: the Go golden vectors decrypt and
re-encrypt byte for byte, and tampering or truncation is detected."""

import hashlib
import io
import json
import os
import struct
import unittest

import _path  # noqa: F401  (sets sys.path)

from custos import envelope
from custos.envelope import Header, Reader, Writer, read_header
from custos.errors import (DecryptionError, MalformedHeaderError, UnsupportedSuiteError,
                           UnsupportedVersionError)


def load_vectors():
    with open(_path.VECTORS, encoding="utf-8") as f:
        return json.load(f)["vectors"]


def encrypt(data_key, header, plaintext, rand=None, chunk=None):
    out = io.BytesIO()
    with Writer(out, header, data_key, rand) as w:
        if chunk is None:
            w.write(plaintext)
        else:
            for i in range(0, len(plaintext), chunk):
                w.write(plaintext[i:i + chunk])
    return out.getvalue()


def decrypt(data_key, ciphertext):
    src = io.BytesIO(ciphertext)
    h = read_header(src)
    return Reader(src, h, data_key).read()


class VectorTest(unittest.TestCase):
    def test_vectors(self):
        vectors = load_vectors()
        self.assertGreaterEqual(len(vectors), 5)
        for v in vectors:
            with self.subTest(v["name"]):
                dk = bytes.fromhex(v["data_key"])
                ct = bytes.fromhex(v["ciphertext"])
                pt = bytes.fromhex(v["plaintext"])
                # Decrypt the Go ciphertext.
                src = io.BytesIO(ct)
                h = read_header(src)
                self.assertEqual(src.tell(), v["header_len"])
                self.assertEqual(h.key, v["key"])
                self.assertEqual(h.key_version, v["key_version"])
                self.assertEqual(h.wrapped_key.hex(), v["wrapped_key"])
                self.assertEqual(h.context, v["context"] or {})
                self.assertEqual(h.segment_size, v["segment_size"])
                self.assertEqual(h.salt.hex(), v["rand"])
                self.assertEqual(h.commitment.hex(), v["commitment"])
                self.assertEqual(hashlib.sha256(h.encode()).hexdigest(), v["header_digest"])
                seg, commit, nonce = envelope._kdf(dk, h._encode_prefix())
                self.assertEqual(seg.hex(), v["segment_key"])
                self.assertEqual(commit.hex(), v["commitment"])
                self.assertEqual(nonce.hex(), v["nonce_prefix"])
                self.assertEqual(Reader(src, h, dk).read(), pt)
                # Re-encrypt byte for byte, in one write and in odd pieces.
                salt = bytes.fromhex(v["rand"])
                for chunk in (None, 1000, 4097):
                    hdr = Header(key=v["key"], key_version=v["key_version"],
                                 wrapped_key=bytes.fromhex(v["wrapped_key"]),
                                 context=dict(v["context"] or {}), segment_size=v["segment_size"])
                    self.assertEqual(encrypt(dk, hdr, pt, lambda n: salt, chunk).hex(), v["ciphertext"])

    def test_context_digest(self):
        self.assertEqual(envelope.context_digest({}).hex(),
                         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        self.assertEqual(envelope.canonical_context({"b": "2", "a": "1"}),
                         b"\0\0\0\x01a\0\0\0\x011\0\0\0\x01b\0\0\0\x012")


DK = bytes(range(32))


def sample(n):
    return hashlib.shake_256(b"custos python test").digest(n)


def header(**kw):
    base = dict(key="k", key_version=1, wrapped_key=b"w" * 40, context={"a": "b"}, segment_size=4096)
    base.update(kw)
    return Header(**base)


class TamperTest(unittest.TestCase):
    def setUp(self):
        self.pt = sample(2 * 4096 + 100)
        self.ct = encrypt(DK, header(), self.pt)
        self.hlen = len(read_header(io.BytesIO(self.ct)).encode())

    def fails(self, ct, exc=(DecryptionError, MalformedHeaderError, UnsupportedVersionError,
                             UnsupportedSuiteError)):
        with self.assertRaises(exc):
            decrypt(DK, ct)

    def test_round_trip_sizes(self):
        for n in (0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 1):
            with self.subTest(n=n):
                pt = sample(n)
                ct = encrypt(DK, header(), pt)
                self.assertEqual(decrypt(DK, ct), pt)
                segs = max(1, -(-n // 4096))
                self.assertEqual(len(ct), self.hlen + n + 16 * segs)

    def test_tamper_every_byte(self):
        # Every header byte and a sample of body bytes.
        positions = list(range(self.hlen)) + list(range(self.hlen, len(self.ct), 97)) + [len(self.ct) - 1]
        for i in positions:
            bad = bytearray(self.ct)
            bad[i] ^= 0x01
            with self.subTest(i=i):
                self.fails(bytes(bad))

    def test_truncate(self):
        lengths = list(range(0, self.hlen + 20)) + [self.hlen + 4096 + 16, self.hlen + 2 * (4096 + 16),
                                                   len(self.ct) - 1, len(self.ct) - 16, len(self.ct) - 17]
        for n in lengths:
            with self.subTest(n=n):
                self.fails(self.ct[:n])

    def test_extend_reorder_duplicate(self):
        body = self.ct[self.hlen:]
        s0, s1, s2 = body[:4112], body[4112:8224], body[8224:]
        hdr = self.ct[:self.hlen]
        for name, ct in (("extended", self.ct + b"\0"), ("reordered", hdr + s1 + s0 + s2),
                         ("duplicated", hdr + s0 + s0 + s1 + s2), ("dropped", hdr + s0 + s2),
                         ("other ciphertext", encrypt(DK, header(), self.pt)[:self.hlen] + body)):
            with self.subTest(name):
                self.fails(ct)

    def test_wrong_key(self):
        src = io.BytesIO(self.ct)
        h = read_header(src)
        with self.assertRaises(DecryptionError):
            Reader(src, h, bytes(32))

    def test_prefix_only_after_auth(self):
        # The reader hands out the authentic first segment, then fails.
        bad = bytearray(self.ct)
        bad[-1] ^= 1
        src = io.BytesIO(bytes(bad))
        r = Reader(src, read_header(src), DK)
        got = bytearray()
        with self.assertRaises(DecryptionError):
            for chunk in r.segments():
                got += chunk
        self.assertEqual(bytes(got), self.pt[:2 * 4096])

    def test_header_rejects(self):
        self.fails(b"XSTE" + self.ct[4:], MalformedHeaderError)
        self.fails(self.ct[:4] + b"\x02" + self.ct[5:], UnsupportedVersionError)
        self.fails(self.ct[:5] + b"\x02" + self.ct[6:], UnsupportedSuiteError)
        # Unsorted context keys are refused although they authenticate.
        h = header(context={"a": "1", "b": "2"})
        ct = encrypt(DK, h, b"x")
        swapped = ct.replace(b"\0\0\0\x01a\0\0\0\x011\0\0\0\x01b\0\0\0\x012",
                             b"\0\0\0\x01b\0\0\0\x012\0\0\0\x01a\0\0\0\x011")
        self.fails(swapped, MalformedHeaderError)
        # A huge context length is refused before anything is read.
        self.fails(self.ct[:4 + 2 + 2 + 1 + 4 + 2 + 40] + struct.pack(">HI", 1, 1 << 31), MalformedHeaderError)

    def test_writer_limits(self):
        for kw in (dict(key=""), dict(key="k" * 257), dict(wrapped_key=b""), dict(wrapped_key=b"w" * 1025),
                   dict(segment_size=4095), dict(segment_size=(16 << 20) + 1), dict(context={"": "x"}),
                   dict(context={str(i): "" for i in range(65)}), dict(context={"a": "x" * 8192}),
                   dict(context={"a": "\ud800"})):
            with self.subTest(kw=str(kw)[:40]):
                with self.assertRaises(MalformedHeaderError):
                    encrypt(DK, header(**kw), b"")
        with self.assertRaises(ValueError):
            encrypt(b"short", header(), b"")

    def test_writer_not_sealed_on_error(self):
        out = io.BytesIO()
        with self.assertRaises(RuntimeError):
            with Writer(out, header(), DK) as w:
                w.write(sample(5000))
                raise RuntimeError("copy failed")
        self.fails(out.getvalue(), DecryptionError)


if __name__ == "__main__":
    unittest.main()
