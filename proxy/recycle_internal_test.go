package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// endStream puts s in the state finish leaves an HTTP/2 stream in.
func endStream(s *stream) {
	s.done = true
	s.gen++
}

// TestStreamRecordsRecycled: an HTTP/2 stream's record goes back to the
// proxy's pool once it ended and nothing lists it, and comes out cleared
// (gen kept, so stale timer entries stay stale); a record that something
// still lists, or that was reused since it ended, is not pooled.
func TestStreamRecordsRecycled(t *testing.T) {
	p := &Proxy{}
	sc := &serverConn{}

	// The race detector's sync.Pool drops some of what is put in it: try
	// a few times.
	reused := false
	for try := 0; try < 40 && !reused; try++ {
		s := p.newStream()
		s.sc, s.id, s.reqBody, s.committed = sc, 7, 100, true
		endStream(s)
		gen := s.gen
		releaseEnded([]streamGen{{s, gen}})
		got := p.newStream()
		if got != s {
			continue
		}
		reused = true
		if got.gen != gen || got.sc != nil || got.id != 0 || got.reqBody != 0 || got.committed || got.done ||
			got.contentLength != -1 || got.info.GRPCStatus != -1 || got.timerIdx != [2]int{-1, -1} || got.p != p {
			t.Fatalf("reused record not cleared: gen %d (want %d), %+v", got.gen, gen, got.streamState)
		}
	}
	if !reused {
		t.Fatal("an ended stream's record never came back from the pool")
	}

	for _, tc := range []struct {
		name string
		set  func(s *stream)
	}{
		{"still blocked on the client", func(s *stream) { s.blockedDown = true }},
		{"still blocked on the endpoint", func(s *stream) { s.blockedUp = true }},
		{"still timed", func(s *stream) { s.timed = true }},
		{"still waiting for a connection", func(s *stream) { s.waiting = true }},
		{"reused since", func(s *stream) { s.gen++ }},
		{"HTTP/1.1", func(s *stream) { s.h1 = &h1Stream{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{}
			for try := 0; try < 20; try++ {
				s := p.newStream()
				s.sc = sc
				endStream(s)
				gen := s.gen
				tc.set(s)
				releaseEnded([]streamGen{{s, gen}})
				if p.newStream() == s {
					t.Fatalf("record pooled although %s", tc.name)
				}
			}
		})
	}
}

// TestDataForReusedRecord: a DATA frame for a stream that ended while the
// frame was handled, whose record already serves another stream, is
// answered as a frame for an ended stream (RST_STREAM STREAM_CLOSED, its
// bytes back to the connection window) and leaves the other stream alone.
func TestDataForReusedRecord(t *testing.T) {
	c, peer := net.Pipe()
	defer c.Close()
	defer peer.Close()
	go io.Copy(io.Discard, peer)
	p := &Proxy{}
	p.cfg.DisableFloodGuard = true
	sc := &serverConn{p: p, conn: c, streams: make(map[uint32]*stream), credit: floodBurst, lastID: 5}
	sc.connThreshold = 1 << 20
	sc.recvWin = 1 << 20
	sc.h2conn.init(c, nil)
	sc.timers.init(sc)

	// Stream 1 of sc looked up by the read loop (the stale pointer), then
	// ended and reused as stream 3 of another connection.
	other := &serverConn{}
	s := p.newStream()
	endStream(s)
	s.streamState = streamState{p: p, contentLength: -1}
	s.sc, s.id, s.downOpen = other, 3, true
	s.reqH.recvWin = 1 << 16
	sc.streams[1] = s // as the read loop found it before the stream ended

	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, &buf)
	fr.WriteData(1, false, []byte("hello"))
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var b batch
	if err := sc.data(&b, f.(*http2.DataFrame)); err != nil {
		t.Fatalf("data: %v", err)
	}
	if s.reqBody != 0 || s.reqH.end || s.done || len(s.reqH.held) != 0 || s.sc != other || s.id != 3 {
		t.Fatalf("the stream now in the record was changed: reqBody %d end %v done %v held %d", s.reqBody, s.reqH.end, s.done, len(s.reqH.held))
	}
	sc.wmu.Lock()
	out := append([]byte(nil), sc.w.buf...)
	unacked := sc.recvUnacked
	sc.wmu.Unlock()
	if unacked != 5 {
		t.Fatalf("the frame's 5 bytes were not returned to the connection window (unacked %d)", unacked)
	}
	rf := http2.NewFramer(nil, bytes.NewReader(out))
	got, err := rf.ReadFrame()
	if err != nil {
		t.Fatalf("no frame written for the ended stream: %v", err)
	}
	rst, ok := got.(*http2.RSTStreamFrame)
	if !ok || rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeStreamClosed {
		t.Fatalf("wrote %v, want RST_STREAM(1, STREAM_CLOSED)", got)
	}
}
