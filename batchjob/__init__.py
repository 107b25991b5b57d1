"""Offline jobs (`batchjob train|score|...`) over the shared feature pipeline."""
