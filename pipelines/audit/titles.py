"""Section titles of the auditors' report in English, Kazakh and Russian (the body text is in English)."""

from __future__ import annotations

from pipelines.audit.document import Title

SUMMARY = Title("Summary", "Қорытынды", "Сводка")
LINEAGE = Title("Lineage", "Шығу тегі", "Происхождение")
TRAINING = Title("Training curves", "Оқыту қисықтары", "Кривые обучения")
METRICS = Title("Test metrics", "Тест метрикалары", "Метрики на тестовой выборке")
CALIBRATION = Title("Calibration", "Калибрлеу", "Калибровка")
SUBGROUPS = Title("Subgroups", "Кіші топтар", "Подгруппы")
GATE = Title("Gate decision", "Сапа бақылауының шешімі", "Решение контроля качества")
PROMOTION = Title("Promotion history", "Жылжыту тарихы", "История продвижения")
MODEL_CARD = Title("Model card", "Модель картасы", "Карточка модели")
USAGE = Title("Usage", "Қолданылуы", "Использование")
DRIFT = Title("Output distribution and drift", "Нәтижелер үлестірімі және дрейф", "Распределение выходов и дрейф")
SEARCH = Title("Finding this version in MLflow", "MLflow-да іздеу", "Поиск в MLflow")
