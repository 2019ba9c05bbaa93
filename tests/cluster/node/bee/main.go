// A small ColonyOS executor for the real node: the Finance Bee's stand-in in `make dev` and
// in the real-node end-to-end tests. It is built from the colonies Go SDK
// (github.com/colonyos/colonies/pkg/client), at the same version as the server, as a static
// binary FROM scratch: no Python runtime (pycolonies would need one) in the image.
//
// It reads the environment the operator gives a FinanceBee (COLONIES_SERVER_HOST,
// COLONIES_SERVER_PORT, COLONIES_TLS, COLONIES_COLONY_NAME, COLONIES_EXECUTOR_PRVKEY,
// EXECUTOR_NAME, EXECUTOR_TYPE, POLL_TIMEOUT), logs its executor ID (never the key), then
// loops: assign a process (long poll), log it, close it successful. The executor must have
// been added to the colony and approved by the colony owner, as the runbook's setup does;
// until it is, assignment fails and the bee says so and retries.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/colonyos/colonies/pkg/client"
	"github.com/colonyos/colonies/pkg/security/crypto"
)

func env(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func logf(format string, args ...any) {
	fmt.Printf("%s %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

func main() {
	host := env("COLONIES_SERVER_HOST")
	port, err := strconv.Atoi(env("COLONIES_SERVER_PORT"))
	if host == "" || err != nil {
		logf("fatal: COLONIES_SERVER_HOST and COLONIES_SERVER_PORT must be set (host %q, port %q)", host, os.Getenv("COLONIES_SERVER_PORT"))
		os.Exit(2)
	}
	tls := strings.EqualFold(env("COLONIES_TLS"), "true")
	colony := env("COLONIES_COLONY_NAME")
	key := env("COLONIES_EXECUTOR_PRVKEY", "COLONIES_PRVKEY")
	name := env("EXECUTOR_NAME", "COLONIES_EXECUTOR_NAME")
	executorType := env("EXECUTOR_TYPE", "COLONIES_EXECUTOR_TYPE")
	poll, err := strconv.Atoi(env("POLL_TIMEOUT"))
	if err != nil || poll < 1 {
		poll = 10
	}
	if colony == "" || key == "" {
		logf("fatal: COLONIES_COLONY_NAME and COLONIES_EXECUTOR_PRVKEY must be set")
		os.Exit(2)
	}
	id, err := crypto.CreateCrypto().GenerateID(key)
	if err != nil {
		logf("fatal: COLONIES_EXECUTOR_PRVKEY is not a secp256k1 private key: %v", err)
		os.Exit(2)
	}
	logf("bee %s (type %s) starting: executor ID %s, colony %s, server %s:%d (TLS %v), poll %ds",
		name, executorType, id, colony, host, port, tls, poll)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := client.CreateColoniesClient(host, port, !tls, false)
	done, failures, listening := 0, 0, false
	for ctx.Err() == nil {
		// A request stuck on a server that went away (a connection to a deleted pod gets no
		// answer at all) gives up a little after the long poll would have ended.
		call, cancel := context.WithTimeout(ctx, time.Duration(poll+5)*time.Second)
		p, err := c.AssignWithContext(colony, poll, call, "", "", key)
		cancel()
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			msg := err.Error()
			// The server's answers when no process came within the long poll.
			if strings.Contains(msg, "No process available") || strings.Contains(msg, "Assignment timeout") {
				// The server accepted the executor: nothing to do yet.
				if !listening {
					logf("registered with colony %s: waiting for processes of type %s", colony, executorType)
					listening = true
				}
				failures = 0
				continue
			}
			listening = false
			failures++
			hint := ""
			if strings.Contains(msg, "not a member") || strings.Contains(msg, "Access denied") || strings.Contains(msg, "not approved") {
				hint = " (is the executor added to the colony and approved by its owner?)"
			}
			logf("assign failed (%d in a row): %s%s", failures, msg, hint)
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(min(failures, 5)) * time.Second):
			}
			continue
		}
		failures, listening = 0, true
		spec := p.FunctionSpec
		logf("assigned process %s: func %q args %v kwargs %v", p.ID, spec.FuncName, spec.Args, spec.KwArgs)
		if err := c.AddLog(p.ID, fmt.Sprintf("bee %s executed %s\n", name, spec.FuncName), key); err != nil {
			logf("adding a log to process %s failed: %v", p.ID, err)
		}
		if err := c.Close(p.ID, key); err != nil {
			logf("closing process %s failed: %v", p.ID, err)
			continue
		}
		done++
		logf("closed process %s successful (%d done)", p.ID, done)
	}
	logf("stopping after %d processes", done)
}
