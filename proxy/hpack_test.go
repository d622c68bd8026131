package proxy_test

import (
	"io"
	"net/netip"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

func hpackDecoder() *hpack.Decoder { return hpack.NewDecoder(4096, nil) }

func hpackEncoder(w io.Writer) func(name, value string) {
	enc := hpack.NewEncoder(w)
	return func(name, value string) { enc.WriteField(hpack.HeaderField{Name: name, Value: value}) }
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
