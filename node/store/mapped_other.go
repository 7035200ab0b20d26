//go:build !linux

package store

import "errors"

func residentFileBytes() (int64, bool) { return 0, false }

func pageOutTables(string) (int64, error) {
	return 0, errors.New("reclaiming mapped pages is implemented on Linux only")
}

func pageOutValueLog(string) (int64, error) {
	return 0, errors.New("reclaiming mapped pages is implemented on Linux only")
}
