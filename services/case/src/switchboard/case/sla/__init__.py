"""SLA policies, business-hours calendars, timers and escalation."""
