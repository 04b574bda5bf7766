"""The gateway's pure decisions: what a call's SIP, DTMF and router inputs lead to, with no I/O
(no sockets, no clocks read, no tasks), so each is unit-tested on its own."""
