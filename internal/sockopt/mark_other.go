//go:build !linux

package sockopt

import (
	"errors"
	"syscall"
)

// MarkControl returns a Control function that fails: SO_MARK is Linux's.
func MarkControl(uint32) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		return errors.New("SO_MARK is only supported on Linux")
	}
}
