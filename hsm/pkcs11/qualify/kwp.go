package qualify

import (
	"crypto/aes"
	"encoding/binary"
	"errors"
)

// wrapRFC5649 wraps key under kek with AES key wrap with padding (RFC 5649,
// NIST SP 800-38F KWP): the reference the module's CKM_AES_KEY_WRAP_PAD
// output is compared with. Only for checking: custos wraps inside the HSM.
func wrapRFC5649(kek, key []byte) ([]byte, error) {
	if len(key) == 0 {
		return nil, errors.New("empty key")
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	// Alternative initial value: A65959A6 then the key length, 32 bits.
	var a [8]byte
	copy(a[:4], []byte{0xA6, 0x59, 0x59, 0xA6})
	binary.BigEndian.PutUint32(a[4:], uint32(len(key)))
	padded := make([]byte, (len(key)+7)/8*8)
	copy(padded, key)
	var buf [16]byte
	if len(padded) == 8 {
		copy(buf[:8], a[:])
		copy(buf[8:], padded)
		out := make([]byte, 16)
		b.Encrypt(out, buf[:])
		return out, nil
	}
	// RFC 3394 wrapping with that initial value.
	n := len(padded) / 8
	r := padded
	for j := 0; j < 6; j++ {
		for i := 0; i < n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], r[i*8:i*8+8])
			b.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^t)
			copy(r[i*8:], buf[8:])
		}
	}
	return append(a[:], r...), nil
}
