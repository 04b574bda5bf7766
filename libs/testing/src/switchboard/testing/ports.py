from switchboard.core.embedded_nats import free_port, port_open

__all__ = ["free_port", "port_open"]
