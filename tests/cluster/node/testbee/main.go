// A stand-in workload for the real node's end-to-end tests. It logs a fingerprint of the
// executor key it was given (the first 16 hex digits of its SHA-256, never the key), then
// either exits with TESTBEE_EXIT_CODE (a release that crashes) or runs until SIGTERM.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if key := os.Getenv("COLONIES_EXECUTOR_PRVKEY"); key != "" {
		sum := sha256.Sum256([]byte(key))
		fmt.Printf("executor key fingerprint: %s\n", hex.EncodeToString(sum[:])[:16])
	} else {
		fmt.Println("executor key fingerprint: none")
	}
	if s := os.Getenv("TESTBEE_EXIT_CODE"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil {
			code = 2
		}
		fmt.Printf("exiting with code %d\n", code)
		os.Exit(code)
	}
	fmt.Println("running")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
}
