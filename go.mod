module github.com/cagnotte/cagnotte

go 1.26.8
