"""The question each workload kind answers, as a report section opens with it.

Kept with the readers of tables (the report needs no suite code to say what a section is for);
tests/report/test_questions.py checks that every kind the suite registry knows has one.
"""

from __future__ import annotations

QUESTIONS = {
    "fork-dirty": "How does fork() latency grow with the number of dirty pages, and with how "
                  "densely they fill each page-table page, under each paging mode? (Shadow "
                  "paging must write-protect and resync guest page tables that EPT/NPT never "
                  "see.)",
    "mprotect": "What does changing the protection of a range cost as the range grows, and "
                "what does one protection fault cost, under each paging mode?",
    "hugepage": "What do populating, forking with and unmapping a region cost when it is "
                "backed by hugetlbfs, transparent or small pages?",
    "fault": "Does populating many PTEs at once (fault-around, MAP_POPULATE, MADV_POPULATE_*) "
             "pay off against one fault per page, for anonymous and file-backed memory?",
    "dirtier": "How many pages per second can a writer dirty, as the load of dirty-logging "
               "experiments?",
    "noop": "What does an empty trial cost: the harness's own floor?",
    "stress-ng": "How does a maintained peer (stress-ng) rate the same operation?",
    "dirty-log": "How much does dirty logging slow a writing guest, before, during and after "
                 "logging is on?",
    "migrate": "How long does a local live migration of a writing guest take, how long is the "
               "guest paused, and how much memory is sent?",
}


def question(kind: str) -> str:
    return QUESTIONS.get(kind, f"What does the {kind} workload measure under each mode?")
