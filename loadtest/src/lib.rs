//! Memento load-test harness and Azure OpenAI mock (library part).
