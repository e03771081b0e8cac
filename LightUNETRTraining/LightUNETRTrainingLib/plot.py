"""Live training curves as MRML plot nodes (Qt-free): a loss table (iteration + one column per loss
term), a validation table (iteration + mean Dice), one ``vtkMRMLPlotSeriesNode`` per column and a
``vtkMRMLPlotChartNode`` showing them all. The widget shows the chart in a plot view; scripts can save
the tables. Rows are appended as events arrive (on the thread that polls the job)."""

from __future__ import annotations

import math

import vtk

PALETTE = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
           (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5)]


class TrainingPlot:
    def __init__(self, scene, name: str = "Training"):
        self.scene = scene
        self.name = name
        self.lossTable = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} loss"))
        self.diceTable = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} validation"))
        self.chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{name} chart"))
        self.chart.SetTitle(f"{name}: loss and validation Dice")
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss / Dice")
        self.series: dict = {}
        self._add_column(self.lossTable, "iteration")
        self._add_column(self.diceTable, "iteration")
        self._add_column(self.diceTable, "dice")
        self._add_series(self.diceTable, "dice", "validation Dice", marker=True)

    @property
    def nodes(self) -> list:
        return [self.lossTable, self.diceTable, self.chart, *self.series.values()]

    @property
    def alive(self) -> bool:
        return self.chart.GetScene() is not None and self.lossTable.GetScene() is not None

    def _add_column(self, tableNode, name: str):
        table = tableNode.GetTable()
        arr = vtk.vtkDoubleArray()
        arr.SetName(name)
        arr.SetNumberOfTuples(table.GetNumberOfRows())
        arr.Fill(math.nan)
        table.AddColumn(arr)
        return arr

    def _add_series(self, tableNode, column: str, label: str, marker: bool = False):
        s = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", self.scene.GenerateUniqueName(f"{self.name} {label}"))
        s.SetAndObserveTableNodeID(tableNode.GetID())
        s.SetXColumnName("iteration")
        s.SetYColumnName(column)
        s.SetPlotType(s.PlotTypeScatter)
        s.SetMarkerStyle(s.MarkerStyleCircle if marker else s.MarkerStyleNone)
        s.SetColor(*PALETTE[len(self.series) % len(PALETTE)])
        self.chart.AddAndObservePlotSeriesNodeID(s.GetID())
        self.series[label] = s
        return s

    def _append(self, tableNode, values: dict) -> None:
        table = tableNode.GetTable()
        for name in values:
            if table.GetColumnByName(name) is None:
                self._add_column(tableNode, name)
                self._add_series(tableNode, name, f"loss {name}")
        row = table.InsertNextBlankRow(math.nan)
        for c in range(table.GetNumberOfColumns()):
            col = table.GetColumn(c)
            v = values.get(col.GetName())
            col.SetValue(row, float(v) if isinstance(v, (int, float)) and v is not None else math.nan)
        table.Modified()
        tableNode.Modified()

    def add_progress(self, iteration, loss: dict) -> None:
        if not self.alive or iteration is None or not loss:
            return
        self._append(self.lossTable, {"iteration": iteration, **{k: v for k, v in loss.items() if v is not None}})

    def add_validation(self, iteration, dice) -> None:
        if not self.alive or iteration is None or dice is None:
            return
        self._append(self.diceTable, {"iteration": iteration, "dice": dice})

    def column(self, tableNode, name: str) -> list:
        table = tableNode.GetTable()
        col = table.GetColumnByName(name)
        return [] if col is None else [col.GetValue(i) for i in range(table.GetNumberOfRows())]

    def remove(self) -> None:
        for n in self.nodes:
            if n is not None and n.GetScene() is not None:
                self.scene.RemoveNode(n)
