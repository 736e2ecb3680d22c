// Command router-tools is the load side of hack/bench/router.py: a fast OpenAI-shaped upstream
// and a load generator, in Go so that neither is what the benchmark measures. Python clients
// and servers on this 2-core machine would be slower than the proxies under test.
//
//	router-tools upstream -addr 127.0.0.1:0 -tokens 16 -delay 1ms
//	router-tools load -url http://127.0.0.1:8080 -c 200 -d 5s [-stream] [-samples FILE]
//	router-tools stops [-tick 1ms] [-min 1ms]
//
// The upstream answers POST /v1/chat/completions: with "stream":true in the body, an SSE
// stream of -tokens events (each written and flushed on its own, -delay apart, then
// "data: [DONE]"), else one JSON completion. It prints "listening on ADDR" once it serves.
//
// The load generator runs -c closed-loop workers for -d (after a -warmup not counted, during
// which the workers' first requests are spread over -ramp) against -url, and prints one JSON object: requests, errors, events (SSE data lines other than
// [DONE]), the rates per second, and the p50/p99 (ms) of the time to the first event (TTFT)
// and of the whole request. Loopback only: it refuses any other host. With -samples, it also
// writes one line per measured request: its start (Unix ns) and its TTFT (us).
//
// The stops probe sleeps -tick at a time, until SIGTERM or SIGINT, and then prints the windows
// (Unix ns, start and end) in which it woke more than -min late, as JSON. Run it at a real-time
// priority on one core (`chrt -f 50 taskset -c N`): nothing in user space then delays its
// wake-up, so a late wake-up is a stop of the whole core (the hypervisor holding the virtual
// CPU, or the kernel running unpreemptible work), which every process on that core waits out.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: router-tools upstream|load|stops [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "upstream":
		upstream(os.Args[2:])
	case "load":
		load(os.Args[2:])
	case "stops":
		stops(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func upstream(args []string) {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback)")
	tokens := fs.Int("tokens", 16, "SSE events per streamed answer")
	delay := fs.Duration("delay", 0, "pause between two events of a stream")
	_ = fs.Parse(args)

	words := []string{"memory", "bandwidth", "limits", "throughput", "on", "large", "batches"}
	chunk := func(i int) []byte {
		return []byte(fmt.Sprintf(
			"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\","+
				"\"choices\":[{\"index\":0,\"delta\":{\"content\":\" %s\"}}]}\n\n", words[i%len(words)]))
	}
	var whole strings.Builder
	for i := 0; i < *tokens; i++ {
		whole.WriteString(" " + words[i%len(words)])
	}
	answer, _ := json.Marshal(map[string]any{
		"id": "c", "object": "chat.completion", "model": "m",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{
			"role": "assistant", "content": whole.String()}, "finish_reason": "stop"}},
		"usage": map[string]int{"prompt_tokens": 4, "completion_tokens": *tokens},
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	mux.HandleFunc("/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !bytes.Contains(body, []byte(`"stream":true`)) && !bytes.Contains(body, []byte(`"stream": true`)) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		flusher := w.(http.Flusher)
		for i := 0; i < *tokens; i++ {
			if i > 0 && *delay > 0 {
				time.Sleep(*delay)
			}
			if _, err := w.Write(chunk(i)); err != nil {
				return
			}
			flusher.Flush()
		}
		_, _ = w.Write([]byte("data: [DONE]\n\n"))
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	_ = http.Serve(ln, mux)
}

type result struct {
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	Events        int64   `json:"events"`
	Seconds       float64 `json:"seconds"`
	RequestsPerS  float64 `json:"requests_per_s"`
	EventsPerS    float64 `json:"events_per_s"`
	TTFTp50Ms     float64 `json:"ttft_p50_ms"`
	TTFTp99Ms     float64 `json:"ttft_p99_ms"`
	TotalP50Ms    float64 `json:"total_p50_ms"`
	TotalP99Ms    float64 `json:"total_p99_ms"`
	FirstErrorMsg string  `json:"first_error,omitempty"`
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("url", "", "base URL of the proxy or upstream (loopback)")
	conc := fs.Int("c", 200, "concurrent closed-loop workers, one connection each")
	dur := fs.Duration("d", 5*time.Second, "measured duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up")
	stream := fs.Bool("stream", false, "ask for SSE streams")
	ramp := fs.Duration("ramp", 0, "spread the workers' first requests over this long (keep it under -warmup)")
	samples := fs.String("samples", "", "write each measured request's start (Unix ns) and TTFT (us) here")
	_ = fs.Parse(args)

	u, err := url.Parse(*target)
	if err != nil || !(strings.HasPrefix(u.Hostname(), "127.") || u.Hostname() == "localhost") {
		fmt.Fprintln(os.Stderr, "load: -url must be a loopback http URL")
		os.Exit(2)
	}
	transport := &http.Transport{
		MaxIdleConns: *conc * 2, MaxIdleConnsPerHost: *conc * 2, MaxConnsPerHost: *conc,
		DisableCompression: true,
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	body := []byte(fmt.Sprintf(
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":%t}`, *stream))
	endpoint := strings.TrimRight(*target, "/") + "/v1/chat/completions"

	var measuring atomic.Bool
	var requests, errors, events atomic.Int64
	var mu sync.Mutex
	var firstErr string
	ttfts := make([][]time.Duration, *conc)
	starts := make([][]time.Time, *conc)
	totals := make([][]time.Duration, *conc)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// Workers that all start at once stay in step (same answer length): every request
			// would arrive in a burst of -c. Real clients do not; spread them.
			time.Sleep(time.Duration(int64(*ramp) * int64(w) / int64(*conc)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				var first time.Duration
				n, err := oneRequest(client, endpoint, body, func() {
					if first == 0 {
						first = time.Since(start)
					}
				})
				total := time.Since(start)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errors.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				requests.Add(1)
				events.Add(int64(n))
				ttfts[w] = append(ttfts[w], first)
				starts[w] = append(starts[w], start)
				totals[w] = append(totals[w], total)
			}
		}(w)
	}
	time.Sleep(*warmup)
	measuring.Store(true)
	began := time.Now()
	time.Sleep(*dur)
	measuring.Store(false)
	elapsed := time.Since(began).Seconds()
	close(stop)
	wg.Wait()

	if *samples != "" {
		if err := writeSamples(*samples, starts, ttfts); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
	}
	var allT, allTotal []time.Duration
	for w := range ttfts {
		allT = append(allT, ttfts[w]...)
		allTotal = append(allTotal, totals[w]...)
	}
	sort.Slice(allT, func(i, j int) bool { return allT[i] < allT[j] })
	sort.Slice(allTotal, func(i, j int) bool { return allTotal[i] < allTotal[j] })
	res := result{
		Requests: requests.Load(), Errors: errors.Load(), Events: events.Load(), Seconds: elapsed,
		RequestsPerS: float64(requests.Load()) / elapsed, EventsPerS: float64(events.Load()) / elapsed,
		TTFTp50Ms: percentile(allT, 0.50), TTFTp99Ms: percentile(allT, 0.99),
		TotalP50Ms: percentile(allTotal, 0.50), TotalP99Ms: percentile(allTotal, 0.99),
		FirstErrorMsg: firstErr,
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

func writeSamples(path string, starts [][]time.Time, ttfts [][]time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(f)
	for w := range ttfts {
		for i := range ttfts[w] {
			fmt.Fprintf(out, "%d %d\n", starts[w][i].UnixNano(), ttfts[w][i].Microseconds())
		}
	}
	if err := out.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func stops(args []string) {
	fs := flag.NewFlagSet("stops", flag.ExitOnError)
	tick := fs.Duration("tick", time.Millisecond, "sleep this long at a time")
	least := fs.Duration("min", time.Millisecond, "report a wake-up later than this")
	_ = fs.Parse(args)

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	found := [][2]int64{}
	for {
		select {
		case <-done:
			out, _ := json.Marshal(map[string]any{"stops": found})
			fmt.Println(string(out))
			return
		default:
		}
		before := time.Now()
		time.Sleep(*tick)
		after := time.Now()
		if after.Sub(before)-*tick > *least {
			found = append(found, [2]int64{before.UnixNano(), after.UnixNano()})
		}
	}
}

// oneRequest posts one request and reads the whole answer, calling onData at the first data
// line (or, for a plain answer, at the first byte); it returns the number of SSE events.
func oneRequest(client *http.Client, endpoint string, body []byte, onData func()) (int, error) {
	resp, err := client.Post(endpoint, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		buf := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return 0, err
		}
		onData()
		_, err := io.Copy(io.Discard, resp.Body)
		return 0, err
	}
	events, done := 0, false
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Bytes()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		onData()
		if bytes.Equal(line, []byte("data: [DONE]")) {
			done = true
			continue
		}
		events++
	}
	if err := scanner.Err(); err != nil {
		return events, err
	}
	if !done {
		return events, fmt.Errorf("stream ended without [DONE]")
	}
	return events, nil
}
