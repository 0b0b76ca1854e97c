package main

import (
	"context"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A link limit (-link 100Mbit) puts an in-process TCP proxy between the
// publisher and the broker that caps the bandwidth in each direction, all
// connections together, as a slow network between dmfexport and a remote
// broker would: what compression buys shows only there.

// parseRate reads a bandwidth such as "100Mbit", "1Gbit" or "512kbit" in
// bits per second; "" is no limit (0).
func parseRate(s string) (float64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "" {
		return 0, nil
	}
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("link %q: want a bandwidth such as 100Mbit", s)
	}
	return f * mult, nil
}

// pacer spaces out the bytes of one direction at rate bits per second
// (none: no limit) and delivers them delay after they were read.
type pacer struct {
	mu    sync.Mutex
	rate  float64
	delay time.Duration
	next  time.Time // when the bytes reserved so far are through the link
}

// linkSlack is how far behind its schedule a link may fall and catch up.
const linkSlack = 5 * time.Millisecond

// pass blocks until n more bytes have gone through the link.
func (p *pacer) pass(n int) {
	if p.rate <= 0 {
		return
	}
	p.mu.Lock()
	now := time.Now()
	// A sleep that overran (a loaded machine wakes late) is made up by
	// the next bytes, up to linkSlack: the link keeps its rate instead of
	// losing every overrun, and an idle link saves up no more than that.
	if p.next.Before(now.Add(-linkSlack)) {
		p.next = now.Add(-linkSlack)
	}
	p.next = p.next.Add(time.Duration(float64(n) * 8 / p.rate * float64(time.Second)))
	until := p.next
	p.mu.Unlock()
	time.Sleep(time.Until(until))
}

// startLink listens on loopback and forwards every connection to target
// through the two pacers. It returns the address to dial and how to stop.
func startLink(target string, bitsPerSec float64) (string, func(), error) {
	return startDelayLink(target, bitsPerSec, 0)
}

// startDelayLink is startLink with a round trip of rtt added: every byte
// reaches the other end rtt/2 after it was sent, in each direction, while
// the bytes behind it keep flowing (a link's latency, not a stop-and-wait).
func startDelayLink(target string, bitsPerSec float64, rtt time.Duration) (string, func(), error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	up, down := &pacer{rate: bitsPerSec, delay: rtt / 2}, &pacer{rate: bitsPerSec, delay: rtt / 2}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				b, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", target)
				if err != nil {
					_ = c.Close()
					return
				}
				go pipe(b, c, up)
				pipe(c, b, down)
			}()
		}
	}()
	return ln.Addr().String(), func() { _ = ln.Close() }, nil
}

// pipe copies src to dst at p's pace, then closes both.
func pipe(dst, src net.Conn, p *pacer) {
	if p.delay > 0 {
		delayedPipe(dst, src, p)
		return
	}
	defer func() { _ = dst.Close() }()
	defer func() { _ = src.Close() }()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.pass(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF or a closed connection: done either way
		}
	}
}

// linkedURL returns the AMQP URL u with its host replaced by a link-limited
// proxy to it, and how to stop the proxy; with no limit, u itself.
func linkedURL(u string, bitsPerSec float64) (string, func(), error) {
	if bitsPerSec <= 0 {
		return u, func() {}, nil
	}
	pu, err := neturl.Parse(u)
	if err != nil {
		return "", nil, err
	}
	host := pu.Host
	if pu.Port() == "" {
		host = net.JoinHostPort(pu.Hostname(), "5672")
	}
	addr, stop, err := startLink(host, bitsPerSec)
	if err != nil {
		return "", nil, err
	}
	pu.Host = addr
	return pu.String(), stop, nil
}

// chunk is bytes read from one end, due at the other at a time.
type chunk struct {
	b   []byte
	due time.Time
}

// delayedPipe is pipe with p.delay: a reader stamps each chunk with the
// time it is due and a writer delivers it then, so the link holds up to a
// bandwidth-delay product of bytes in flight.
func delayedPipe(dst, src net.Conn, p *pacer) {
	q := make(chan chunk, 4096)
	failed := make(chan struct{})
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 16<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{buf[:n], time.Now().Add(p.delay)}:
				case <-failed:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() { _ = src.Close() }()
	defer func() { _ = dst.Close() }()
	for c := range q {
		time.Sleep(time.Until(c.due))
		p.pass(len(c.b))
		if _, err := dst.Write(c.b); err != nil {
			close(failed)
			return
		}
	}
}

// parseLink reads a link such as "200Mbit,20ms": a bandwidth and,
// optionally, the round trip it adds.
func parseLink(s string) (float64, time.Duration, error) {
	rateText, rttText, _ := strings.Cut(s, ",")
	rate, err := parseRate(rateText)
	if err != nil || rttText == "" {
		return rate, 0, err
	}
	rtt, err := time.ParseDuration(strings.TrimSpace(rttText))
	if err != nil || rtt < 0 {
		return 0, 0, fmt.Errorf("link %q: want a bandwidth and a round trip such as 200Mbit,20ms", s)
	}
	return rate, rtt, nil
}
