"""Unattended runs on a fleet of runners: the nightly wrapper cron starts."""
