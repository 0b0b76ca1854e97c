package dmf

import (
	"context"
	"github.com/dmfexport/dmfexport/internal/ctxio"
	"sync"
	"time"
)

// F&O limits each user (the application's mapped user) to 6,000 requests
// and 1,200 s of execution time per 5 minutes and 52 concurrent requests,
// whichever process or export makes them (shared/dmf-api.md). A Pacer is
// shared by every Client of one environment in a process, so that many
// exports together stay under those limits instead of each retrying its
// own 429s.
const (
	// DefaultRequestsPerMinute is a Pacer's pace when none is given: half
	// of F&O's average of 1,200 per minute, so that with the burst (a
	// minute's worth) at most 3,600 calls fall in any 5 minutes, leaving
	// room for other integrations of the same user.
	DefaultRequestsPerMinute = 600
	// DefaultMaxInFlight bounds the calls a Pacer lets be in progress at
	// once, well under F&O's 52 per user.
	DefaultMaxInFlight = 16
	// DefaultPollTick is the period of a Pacer's poll ticker.
	DefaultPollTick = time.Second

	// recoverEvery is how often, without a 429, a slowed-down Pacer raises
	// its pace by a tenth of its configured pace: from half to full takes
	// 50 s.
	recoverEvery = 10 * time.Second
	// slowestPace bounds how far 429s slow a Pacer: a sixteenth of its
	// configured pace.
	slowestPace = 16
)

// PacerOptions configure a Pacer; the zero value is usable.
type PacerOptions struct {
	// RequestsPerMinute is the most calls per minute on average; 0 means
	// DefaultRequestsPerMinute. After an idle spell up to Burst calls go
	// at once, so any 5 minutes hold at most 5×RequestsPerMinute+Burst.
	RequestsPerMinute int
	// Burst is how many calls may go at once after an idle spell; 0 means
	// RequestsPerMinute (a minute's worth).
	Burst int
	// MaxInFlight bounds the calls in progress at once; 0 means
	// DefaultMaxInFlight.
	MaxInFlight int
	// PollTick is the period of the ticker every status poll and package
	// URL ask of the environment waits on, so that polls of many
	// executions go together instead of each on its own timer; 0 means
	// DefaultPollTick.
	PollTick time.Duration

	// OnThrottled, if set, is called for each 429 a Client of this Pacer
	// receives, and OnRate with the pace (calls per minute) whenever it
	// changes; both for metrics, and must not block.
	OnThrottled func()
	OnRate      func(perMinute float64)
}

// Pacer paces the calls of every Client of one F&O environment given it in
// ClientOptions.Pacer: it spaces them to a rate, bounds how many are in
// progress, and adapts: a 429 stops every call of the environment until
// its Retry-After has passed (not only the caller's retry) and halves the
// pace; each 10 s without a 429 then raises it by a tenth of the
// configured pace. Its poll ticker batches status polls in time. Safe for
// concurrent use; the zero value is not usable: use NewPacer.
type Pacer struct {
	mu          sync.Mutex
	limit       float64       // configured calls per second
	rate        float64       // current calls per second, limit/slowestPace ≤ rate ≤ limit
	tolerance   time.Duration // how far ahead of its pace the bucket may run (burst-1 calls)
	tat         time.Time     // theoretical arrival time of the next call (GCRA)
	blocked     time.Time     // no call before this (a Retry-After)
	halveAfter  time.Time     // a 429 before this belongs to the episode already counted
	lastRaise   time.Time
	throttles   int64
	inFlight    chan struct{}
	onThrottled func()
	onRate      func(float64)

	tick    time.Duration
	tickMu  sync.Mutex
	tickCh  chan struct{} // closed at the next tick; nil while the ticker is idle
	waiting int           // poll waits in progress
}

// NewPacer returns a Pacer for one environment.
func NewPacer(o PacerOptions) *Pacer {
	p := &Pacer{onThrottled: o.OnThrottled, onRate: o.OnRate, tick: o.PollTick}
	if p.tick <= 0 {
		p.tick = DefaultPollTick
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	p.inFlight = make(chan struct{}, o.MaxInFlight)
	p.setLimit(o.RequestsPerMinute, o.Burst)
	return p
}

// SetLimit changes the pace (0: the default) and the burst (0: a minute's
// worth), e.g. after a configuration reload; a slowed-down pace stays
// slowed down in proportion.
func (p *Pacer) SetLimit(requestsPerMinute, burst int) {
	p.mu.Lock()
	p.setLimit(requestsPerMinute, burst)
	rate := p.rate
	p.mu.Unlock()
	p.rateChanged(rate)
}

func (p *Pacer) setLimit(requestsPerMinute, burst int) {
	if requestsPerMinute <= 0 {
		requestsPerMinute = DefaultRequestsPerMinute
	}
	if burst <= 0 {
		burst = requestsPerMinute
	}
	limit := float64(requestsPerMinute) / 60
	if p.limit > 0 {
		p.rate = limit * p.rate / p.limit
	} else {
		p.rate = limit
	}
	p.limit = limit
	p.tolerance = time.Duration(float64(burst-1) * float64(time.Second) / limit)
}

// SetPollTick changes the period of the poll ticker (0: the default)
// from its next start: it runs only while polls wait.
func (p *Pacer) SetPollTick(d time.Duration) {
	if d <= 0 {
		d = DefaultPollTick
	}
	p.tickMu.Lock()
	p.tick = d
	p.tickMu.Unlock()
}

// RequestsPerMinute is the pace now: the configured one, or less after 429s.
func (p *Pacer) RequestsPerMinute() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate * 60
}

// Throttles reports how many 429s the Clients of this Pacer received.
func (p *Pacer) Throttles() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.throttles
}

// acquire waits for the turn of one call and a place among those in
// progress; the call must then call the returned release.
func (p *Pacer) acquire(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for {
		p.mu.Lock()
		now := time.Now()
		if now.Before(p.blocked) {
			d := p.blocked.Sub(now)
			p.mu.Unlock()
			if err := ctxio.Sleep(ctx, d); err != nil {
				return nil, err
			}
			continue
		}
		tat := p.tat
		if tat.Before(now) {
			tat = now
		}
		at := tat.Add(-p.tolerance)
		p.tat = tat.Add(time.Duration(float64(time.Second) / p.rate))
		p.mu.Unlock()
		if at.After(now) {
			if err := ctxio.Sleep(ctx, at.Sub(now)); err != nil {
				return nil, err
			}
			p.mu.Lock()
			blocked := time.Now().Before(p.blocked)
			p.mu.Unlock()
			if blocked {
				continue // a 429 came while waiting: queue up behind it
			}
		}
		break
	}
	select {
	case p.inFlight <- struct{}{}:
		return func() { <-p.inFlight }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// throttled records a 429 that asked to wait retryAfter: no call of the
// environment goes before it has passed, then calls go one at a time at
// half the pace (once per episode: 429s of calls already under way when
// the first came do not halve it again).
func (p *Pacer) throttled(retryAfter time.Duration) {
	p.mu.Lock()
	now := time.Now()
	p.throttles++
	until := now.Add(retryAfter)
	if until.After(p.blocked) {
		p.blocked = until
	}
	changed := false
	if !now.Before(p.halveAfter) {
		p.rate = max(p.rate/2, p.limit/slowestPace)
		p.halveAfter = p.blocked
		changed = true
	}
	p.lastRaise = now
	if restart := p.blocked.Add(p.tolerance); p.tat.Before(restart) {
		p.tat = restart // no burst after a block
	}
	rate := p.rate
	p.mu.Unlock()
	if p.onThrottled != nil {
		p.onThrottled()
	}
	if changed {
		p.rateChanged(rate)
	}
}

// succeeded records an accepted call: a slowed-down pace recovers by a
// tenth of the configured one per recoverEvery without a 429.
func (p *Pacer) succeeded() {
	p.mu.Lock()
	now := time.Now()
	if p.rate >= p.limit || now.Sub(p.lastRaise) < recoverEvery {
		p.mu.Unlock()
		return
	}
	p.rate = min(p.limit, p.rate+p.limit/10)
	p.lastRaise = now
	rate := p.rate
	p.mu.Unlock()
	p.rateChanged(rate)
}

func (p *Pacer) rateChanged(rate float64) {
	if p.onRate != nil {
		p.onRate(rate * 60)
	}
}

// pollWait waits at least d, until the first tick of the environment's
// poll ticker after that. One ticker serves every wait of the Pacer; it
// runs only while someone waits.
func (p *Pacer) pollWait(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	p.tickMu.Lock()
	p.waiting++
	p.tickMu.Unlock()
	defer func() {
		p.tickMu.Lock()
		p.waiting--
		p.tickMu.Unlock()
	}()
	for {
		if !time.Now().Before(deadline) {
			return ctx.Err()
		}
		select {
		case <-p.nextTick():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nextTick returns a channel closed at the next tick, starting the ticker
// if it is idle.
func (p *Pacer) nextTick() <-chan struct{} {
	p.tickMu.Lock()
	defer p.tickMu.Unlock()
	if p.tickCh == nil {
		p.tickCh = make(chan struct{})
		go p.ticker(p.tick)
	}
	return p.tickCh
}

// ticker closes the tick channel every tick while polls wait, and stops
// at the first tick with none waiting.
func (p *Pacer) ticker(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for range t.C {
		p.tickMu.Lock()
		ch := p.tickCh
		idle := p.waiting == 0
		if idle {
			p.tickCh = nil
		} else {
			p.tickCh = make(chan struct{})
		}
		p.tickMu.Unlock()
		close(ch)
		if idle {
			return
		}
	}
}
