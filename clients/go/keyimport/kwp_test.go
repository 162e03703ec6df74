package keyimport

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// The examples of RFC 5649, section 6.
func TestWrapRFC5649(t *testing.T) {
	kek, _ := hex.DecodeString("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	for _, c := range []struct{ key, want string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		key, _ := hex.DecodeString(c.key)
		want, _ := hex.DecodeString(c.want)
		got, err := WrapPad(kek, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("wrap %s: %x, %v; want %x", c.key, got, err, want)
		}
	}
}
