package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
)

// countingReader counts the reads made of it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// A client connection's reader returns what protocol detection read ahead
// first, takes what the connection has in one read of up to 16 KiB however
// small the reads made of it, holds a buffer only while it holds unread
// bytes, and reads a large frame straight into the caller's buffer.
func TestConnReaderBuffers(t *testing.T) {
	ahead := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	body := make([]byte, 10<<10)
	for i := range body {
		body[i] = byte(i)
	}
	big := bytes.Repeat([]byte{7}, clientReadSize)
	src := &countingReader{r: io.MultiReader(bytes.NewReader(body), bytes.NewReader(big))}
	first := bufio.NewReaderSize(bytes.NewReader(ahead), 64)
	if _, err := first.Peek(len(ahead)); err != nil {
		t.Fatal(err)
	}
	cr := newConnReader(first, src)

	got := make([]byte, len(ahead))
	if _, err := io.ReadFull(cr, got); err != nil || !bytes.Equal(got, ahead) {
		t.Fatalf("read-ahead bytes: %q, %v", got, err)
	}
	if src.reads != 0 || cr.box != nil {
		t.Fatalf("read the connection (%d reads) or took a buffer before the read-ahead bytes were used", src.reads)
	}
	// Frame-sized pieces: a 9-byte header, then payloads.
	var out []byte
	p := make([]byte, 9)
	for len(out) < len(body) {
		n, err := cr.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p[:n]...)
		if len(out) < len(body) && (cr.box == nil || cr.Buffered() != len(body)-len(out)) {
			t.Fatalf("after %d bytes: buffer %v, %d buffered; want the rest of the 10 KiB read at once", len(out), cr.box != nil, cr.Buffered())
		}
	}
	if !bytes.Equal(out, body) {
		t.Fatal("bytes changed on the way")
	}
	if src.reads != 1 {
		t.Fatalf("%d reads of the connection for 10 KiB, want 1", src.reads)
	}
	if cr.box != nil || cr.Buffered() != 0 {
		t.Fatal("the buffer is still held with nothing in it")
	}
	// A frame as large as the buffer goes straight into the caller's.
	frame := make([]byte, clientReadSize)
	if _, err := io.ReadFull(cr, frame); err != nil || !bytes.Equal(frame, big) {
		t.Fatalf("large frame: %v", err)
	}
	if cr.box != nil {
		t.Fatal("a large read went through a pooled buffer")
	}
	if _, err := cr.Read(p); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
}

// On a socket the reader takes its buffer only for a read that finds
// bytes, and ends with EOF when the peer closes.
func TestConnReaderSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	cr := newConnReader(nil, newSockReader(server))
	if cr.sock == nil {
		t.Fatal("a TCP connection is read without the raw socket reader")
	}
	msg := []byte("hello, proxy")
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(cr, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %q, %v", got, err)
	}
	if cr.box != nil || cr.sock.box != nil {
		t.Fatal("a buffer is held after its bytes were read")
	}
	client.Close()
	if n, err := cr.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want EOF", n, err)
	}
	if cr.box != nil || cr.sock.box != nil {
		t.Fatal("a buffer is held after EOF")
	}
}
