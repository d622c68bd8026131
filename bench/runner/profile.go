package runner

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// profile runs zonelb alone at the highest offered rate with its admin
// endpoint on, takes a CPU profile over cfg.ProfileFor, and summarises it
// with `go tool pprof -top`.
func (r *runner) profile(ctx context.Context, workload string) Profile {
	rate := slices.Max(r.cfg.Rates)
	p := Profile{Workload: workload, RPS: rate, Duration: r.cfg.ProfileFor}
	fail := func(err error) Profile { p.Err = err.Error(); return p }

	dir := filepath.Join(r.cfg.WorkDir, "profile-"+workload)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(fmt.Errorf("create %s: %w", dir, err))
	}
	admin, err := freeLoopbackPort()
	if err != nil {
		return fail(err)
	}
	rp, err := r.startProxy(ctx, PeerZonelb, workload, dir, admin)
	if err != nil {
		return fail(err)
	}
	defer r.stopProxy(rp)
	if err := waitListening(ctx, rp.proc, admin, 10*time.Second); err != nil {
		return fail(fmt.Errorf("zonelb admin endpoint: %w", err))
	}
	base := loadSpec{Target: rp.listen, RPS: rate, Connections: r.cfg.Connections, StreamsPerConn: r.cfg.OpenLoopStreams, Threads: 1}
	warm := base
	warm.Duration = r.cfg.Warmup
	if _, err := r.load(ctx, dir, "warmup", workload, warm); err != nil {
		return fail(fmt.Errorf("warm-up: %w", err))
	}
	// The load outlasts the profile by a margin for the load generator's
	// start-up, so the whole profile window sees steady load.
	loaded := base
	loaded.Duration = r.cfg.ProfileFor + 2*time.Second
	type loadOutcome struct {
		res loadResult
		err error
	}
	loadDone := make(chan loadOutcome, 1)
	cpuBefore, cpuErr := procCPU(r.cfg.ProcRoot, rp.proc.Pid())
	go func() {
		res, err := r.load(ctx, dir, "profiled", workload, loaded)
		loadDone <- loadOutcome{res, err}
	}()
	p.Path = filepath.Join(dir, "zonelb-"+workload+".pprof")
	profErr := fetchProfile(ctx, admin, r.cfg.ProfileFor, p.Path)
	out := <-loadDone
	if out.err != nil {
		return fail(fmt.Errorf("load while profiling: %w", out.err))
	}
	if out.res.Wall > 0 {
		p.AchievedRPS = float64(out.res.Completed) / out.res.Wall.Seconds()
		if cpuAfter, err := procCPU(r.cfg.ProcRoot, rp.proc.Pid()); err == nil && cpuErr == nil {
			p.ProxyBusy = float64(cpuAfter-cpuBefore) / float64(out.res.Wall)
		}
	}
	if profErr != nil {
		return fail(profErr)
	}
	if p.Top, err = pprofTop(ctx, r.cfg.Bin.Go, r.cfg.Bin.Zonelb, p.Path, false); err != nil {
		return fail(err)
	}
	if p.TopCum, err = pprofTop(ctx, r.cfg.Bin.Go, r.cfg.Bin.Zonelb, p.Path, true); err != nil {
		return fail(err)
	}
	return p
}

func fetchProfile(ctx context.Context, admin string, d time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	url := "http://" + admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build profile request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch CPU profile: %s: %s", resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create profile file: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("save CPU profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save CPU profile: %w", err)
	}
	return nil
}

func pprofTop(ctx context.Context, goTool, binary, profile string, cum bool) (string, error) {
	args := []string{"tool", "pprof", "-top", "-nodecount=30"}
	if cum {
		args = append(args, "-cum")
	}
	args = append(args, binary, profile)
	out, err := exec.CommandContext(ctx, goTool, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %v: %w: %s", args, err, out)
	}
	return string(out), nil
}
