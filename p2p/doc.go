// Package p2p is Cagnotte's network layer: node identities as libp2p peer
// ids, and (as the replication work lands) the libp2p host, GossipSub topics
// and validators, discovery, anti-entropy and the connection gater that
// admits only federation members. It depends on crdt and libp2p only.
package p2p
