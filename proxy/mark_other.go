//go:build !linux

package proxy

import "errors"

func setMark(uintptr, int) error { return errors.New("SO_MARK is only supported on Linux") }
